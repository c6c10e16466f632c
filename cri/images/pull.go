package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullImage pulls and unpacks an image and returns its ID. The image is then
// known by its repo tag (if pulled by tag), its repo digest and its ID.
func (s *Service) PullImage(ctx context.Context, req *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	ref, err := imageField(req.GetImage(), "image.image")
	if err != nil {
		return nil, err
	}
	if _, err := normalizeRef(ref); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "image.image %q is not a valid image reference: %v", ref, err)
	}
	img, err := s.pull(ctx, ref, req.GetAuth())
	if err != nil {
		return nil, grpcError(err)
	}
	return &runtime.PullImageResponse{ImageRef: img.ID}, nil
}

// pull collapses concurrent pulls of the same reference with the same
// credentials (kubelet pulls the same image for several pods at once; the
// runtime pulls the sandbox image for every RunPodSandbox until it exists).
// Credentials are part of the key so that a caller without a pull secret
// never rides on another caller's authorised pull.
func (s *Service) pull(ctx context.Context, ref string, auth *runtime.AuthConfig) (Image, error) {
	named, err := normalizeRef(ref)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	key := named.String() + "\x00" + authKey(auth)
	return s.pulls.do(s.ctx(ctx), key, func(ctx context.Context) (Image, error) {
		return s.doPull(ctx, named.String(), auth)
	})
}

// authKey is a digest of the credentials (never the credentials themselves,
// which would then sit in a long-lived map key).
func authKey(auth *runtime.AuthConfig) string {
	if auth == nil {
		return ""
	}
	h := sha256.New()
	for _, f := range []string{auth.GetUsername(), auth.GetPassword(), auth.GetAuth(),
		auth.GetServerAddress(), auth.GetIdentityToken(), auth.GetRegistryToken()} {
		// Length-prefixed so that field boundaries cannot be shifted.
		fmt.Fprintf(h, "%d:%s", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Service) doPull(ctx context.Context, ref string, auth *runtime.AuthConfig) (Image, error) {
	start := time.Now()
	named, err := normalizeRef(ref)
	if err != nil {
		return Image{}, err
	}
	labels := s.labelsFor(ref)
	// WithPullUnpack makes Pull wait for the unpack, so the snapshot exists
	// when this returns: RunPodSandbox and CreateContainer rely on it.
	cimg, err := s.client.Pull(ctx, ref,
		containerd.WithResolver(s.newResolver(ctx, auth)),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(s.opts.Snapshotter),
		containerd.WithPullLabels(labels),
	)
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", ref, err)
	}
	desc, err := cimg.Config(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: config descriptor: %w", ref, err)
	}
	id := desc.Digest.String()
	target := cimg.Target()
	repoTag, repoDigest := repoNames(named, target.Digest)

	// The download is done; the few record writes that make it visible are
	// finished even if every caller has gone by now, so that the image is
	// never left half-named.
	ctx = context.WithoutCancel(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	// The ID record is written first: if the process dies in between, the
	// content is already reachable by ID and the next Sync indexes it.
	info, err := s.loadInfo(ctx, cimg.Metadata(), nil)
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", ref, err)
	}
	for _, name := range []string{id, repoTag, repoDigest} {
		if name == "" {
			continue
		}
		rec, err := s.createOrUpdate(ctx, ctrimages.Image{Name: name, Target: target, Labels: labels})
		if err != nil {
			return Image{}, fmt.Errorf("pull %q: record %q: %w", ref, name, err)
		}
		s.store.put(rec, info)
	}
	v, ok := s.store.get(id)
	if !ok {
		return Image{}, fmt.Errorf("pull %q: image %s vanished from the index", ref, id)
	}
	s.log.Info("images: pulled", "ref", ref, "id", id, "size", info.size, "duration", time.Since(start))
	return s.toImage(v), nil
}
