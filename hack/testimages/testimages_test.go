package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"
)

func TestRepoTag(t *testing.T) {
	for _, c := range []struct{ ref, repo, tag string }{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "e2e-test-images/busybox", "1.29-2"},
		{"gcr.io/k8s-staging-cri-tools/test-image-latest", "k8s-staging-cri-tools/test-image-latest", "latest"},
		{"registry.k8s.io/pause:3.9", "pause", "3.9"},
		{"k8s.gcr.io/pause:3.9", "pause", "3.9"},
		{"localhost:5000/a/b", "a/b", "latest"},
	} {
		repo, tag, err := repoTag(c.ref)
		if err != nil || repo != c.repo || tag != c.tag {
			t.Errorf("repoTag(%q) = %q, %q, %v; want %q, %q", c.ref, repo, tag, err, c.repo, c.tag)
		}
	}
	if _, _, err := repoTag("busybox:1.29"); err == nil {
		t.Error("a name without a registry host must be rejected")
	}
}

// TestSpecs checks the invariants critest relies on: every name once, and
// distinct image IDs (config digests) except for names of one image.
func TestSpecs(t *testing.T) {
	b := fakeBuilder()
	names := map[string]bool{}
	ids := map[string]string{}
	for _, s := range specs() {
		cfg, _, err := assemble(b, s)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := ids[cfg.digest]; dup {
			t.Errorf("%s has the same image ID as %s", s.names[0], other)
		}
		ids[cfg.digest] = s.names[0]
		for _, n := range s.names {
			if names[n] {
				t.Errorf("%s listed twice", n)
			}
			names[n] = true
		}
	}
	for _, want := range []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2", SandboxImage,
		"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"} {
		if !names[want] {
			t.Errorf("%s missing", want)
		}
	}
}

// TestLayersReproducible builds the busybox and nnp layers twice and reads
// the tar back: identical digests, hard-linked applets, setuid nnp.
func TestLayersReproducible(t *testing.T) {
	for _, key := range []string{"busybox", "nnp"} {
		l1, err := fakeBuilder().layer(key)
		if err != nil {
			t.Fatal(err)
		}
		l2, _ := fakeBuilder().layer(key)
		if l1.gz.digest != l2.gz.digest || l1.diffID != l2.diffID {
			t.Fatalf("%s: digests differ between builds", key)
		}
		zr, err := gzip.NewReader(bytes.NewReader(l1.gz.data))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		seen := map[string]*tar.Header{}
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 || strings.HasPrefix(h.Name, "/") {
				t.Errorf("%s: %s: uid %d gid %d mtime %v", key, h.Name, h.Uid, h.Gid, h.ModTime)
			}
			seen[h.Name] = h
		}
		switch key {
		case "busybox":
			if h := seen["bin/ls"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "bin/busybox" {
				t.Errorf("bin/ls must be a hard link to bin/busybox: %+v", h)
			}
			if h := seen["bin/pgrep"]; h == nil || h.Typeflag != tar.TypeReg {
				t.Errorf("bin/pgrep must be the stand-in: %+v", h)
			}
			if h := seen["tmp/"]; h == nil || h.Mode != 0o1777 {
				t.Errorf("tmp must be 1777: %+v", h)
			}
		case "nnp":
			if h := seen["usr/local/bin/nnp"]; h == nil || h.Mode != 0o4755 {
				t.Errorf("nnp must be mode 04755: %+v", h)
			}
		}
	}
}

func fakeBuilder() *builder {
	bins := map[string][]byte{}
	for _, n := range []string{"berth-pause", "pgrep", "ipcs", "nnp", "nginx", "httpd"} {
		bins[n] = []byte("#!" + n)
	}
	return &builder{
		root: []rootFile{
			{path: "bin/busybox", mode: 0o755, data: []byte("busybox")},
			{path: "lib64/ld.so", link: "/lib/ld.so"},
		},
		applets: []string{"busybox", "ls", "sh"},
		bins:    bins, cache: map[string]builtLayer{},
	}
}
