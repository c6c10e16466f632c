package images

import (
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// normalizeRef turns what a user typed ("busybox", "gcr.io/x/y:1",
// "repo@sha256:…") into the fully qualified form that is stored as a
// containerd image name ("docker.io/library/busybox:latest"). A reference
// with both a tag and a digest keeps only the digest, because the digest is
// what is pulled; that matches containerd's CRI, so names written by either
// runtime into the shared namespace look the same.
func normalizeRef(ref string) (reference.Named, error) {
	return reference.ParseDockerRef(ref)
}

// repoNames returns the repo tag and the repo digest under which a pulled
// image is recorded. A pull by digest has no tag; a pull by tag gets a digest
// name built from the manifest digest the tag resolved to, so that
// ImageStatus("repo@sha256:…") works for images pulled by tag.
func repoNames(named reference.Named, manifest digest.Digest) (repoTag, repoDigest string) {
	if _, ok := named.(reference.NamedTagged); ok {
		repoTag = named.String()
	}
	if c, ok := named.(reference.Canonical); ok {
		repoDigest = c.String()
	} else if manifest != "" {
		repoDigest = named.Name() + "@" + manifest.String()
	}
	return repoTag, repoDigest
}

// isImageID reports whether name is an image ID record ("sha256:<hex>"),
// i.e. the name the service gives every image so that it stays addressable
// (and protected from containerd's GC) by ID alone.
func isImageID(name string) bool {
	d, err := digest.Parse(name)
	return err == nil && d.String() == name
}

// splitNames sorts the containerd image names of one image into CRI repo
// tags and repo digests. ID records and names that are not docker references
// (containerd allows any string as an image name, e.g. from `ctr import`)
// are left out: CRI clients parse these lists as references. Both lists are
// sorted so that ImageStatus gives equal answers for every name of an image.
func splitNames(names []string) (tags, digests []string) {
	for _, n := range names {
		if isImageID(n) {
			continue
		}
		parsed, err := reference.ParseAnyReference(n)
		if err != nil {
			continue
		}
		switch parsed.(type) {
		case reference.Canonical:
			digests = append(digests, parsed.String())
		case reference.Tagged:
			tags = append(tags, parsed.String())
		}
	}
	sort.Strings(tags)
	sort.Strings(digests)
	return tags, digests
}

// idPrefix returns the hex part of a full or truncated image ID ("sha256:ab12",
// "ab12"), as shown by `crictl images`; ok is false when ref cannot be one.
func idPrefix(ref string) (hex string, ok bool) {
	hex = strings.TrimPrefix(ref, string(digest.SHA256)+":")
	if hex == "" || len(hex) > 64 {
		return "", false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return hex, true
}

// resolveID finds the image ID that ref designates among ids, using the
// name→ID index lookup. The order mirrors containerd's CRI: an exact ID
// first, then a name (tag or digest) after normalisation, then a unique
// prefix of an ID. Names win over prefixes because a short hex string like
// "abc" is also a valid repository name.
func resolveID(ref string, lookup func(name string) (string, bool), ids []string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	if isImageID(ref) {
		for _, id := range ids {
			if id == ref {
				return id, nil
			}
		}
		return "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	if named, err := normalizeRef(ref); err == nil {
		if id, ok := lookup(named.String()); ok {
			return id, nil
		}
	}
	if hex, ok := idPrefix(ref); ok {
		var match string
		for _, id := range ids {
			if strings.HasPrefix(strings.TrimPrefix(id, string(digest.SHA256)+":"), hex) {
				if match != "" {
					return "", fmt.Errorf("image ID prefix %q is ambiguous: %w", ref, errdefs.ErrInvalidArgument)
				}
				match = id
			}
		}
		if match != "" {
			return match, nil
		}
	}
	return "", fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}
