// Command testimages builds every container image critest v1.36.0 pulls,
// plus berth's sandbox image, and pushes them to a local registry that
// containerd and berth-cri use as a mirror for every public registry (see
// hack/test-images.sh and docs/design/cri-plan.md §5). No container
// registry is reachable from the test machines, so nothing can be pulled
// from upstream.
//
// Images are single-platform OCI manifests with gzip layers. Every layer is
// built from fixed inputs (Debian's busybox and glibc packages, Go
// stand-ins compiled here with CGO_ENABLED=0 -trimpath) with fixed mtimes
// and owners, so the digests only change when the inputs do, and images the
// registry already holds under the same digest are skipped.
//
//	go run ./hack/testimages --registry 127.0.0.1:5000 --debroot DIR
//	go run ./hack/testimages --list
//
// The module is stdlib-only on purpose: a registry client library would
// pull docker/cli and moby into berth's go.mod.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// Stand-ins and the pause binary, built from this module.
	module = "github.com/berthdev/berth"
)

// standins are the packages built into the images; go build names each
// binary after the last path element.
var standins = []string{
	module + "/cmd/berth-pause",
	module + "/hack/testimages/standins/pgrep",
	module + "/hack/testimages/standins/ipcs",
	module + "/hack/testimages/standins/nnp",
	module + "/hack/testimages/standins/nginx",
	module + "/hack/testimages/standins/httpd",
}

func main() {
	addr := flag.String("registry", "127.0.0.1:5000", "registry `host:port` to push to (plain HTTP)")
	debroot := flag.String("debroot", "/var/cache/berth/test-images/debroot",
		"`dir` holding dpkg -x of Debian's busybox and libc6 packages")
	repo := flag.String("repo", ".", "`dir` inside the berth module, where the stand-ins are built from")
	list := flag.Bool("list", false, "print the public name of every image and exit")
	flag.Parse()

	if *list {
		for _, s := range specs() {
			for _, n := range s.names {
				fmt.Println(n)
			}
		}
		return
	}
	if err := run(*addr, *debroot, *repo); err != nil {
		fmt.Fprintln(os.Stderr, "testimages:", err)
		os.Exit(1)
	}
}

func run(addr, debroot, repoDir string) error {
	start := time.Now()
	reg := newRegistry(addr)
	if err := reg.ping(); err != nil {
		return fmt.Errorf("registry %s not serving (hack/registry.sh start): %w", addr, err)
	}
	root, applets, err := loadDebRoot(debroot)
	if err != nil {
		return fmt.Errorf("busybox and libc6 from %s: %w (hack/test-images.sh downloads them)", debroot, err)
	}

	bins, err := buildStandins(repoDir)
	if err != nil {
		return err
	}
	b := &builder{root: root, applets: applets, bins: bins, cache: map[string]builtLayer{}}

	for _, s := range specs() {
		config, manifest, err := assemble(b, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.names[0], err)
		}
		for _, name := range s.names {
			state, err := push(reg, name, b, s, config, manifest)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			// The image ID a CRI runtime reports is the config digest.
			fmt.Printf("%-62s %s id=%s %s\n", name, manifest.digest, config.digest, state)
		}
	}
	fmt.Printf("done in %.1fs\n", time.Since(start).Seconds())
	return nil
}

// buildStandins compiles berth-pause and the stand-ins statically in one go
// build and returns their bytes by name.
func buildStandins(repoDir string) (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "berth-testimages-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	goBin := "go"
	if _, err := exec.LookPath(goBin); err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// -trimpath and no VCS stamp: the binaries, so the layers, depend only
	// on the sources and the toolchain, not on the checkout's path or state.
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", dir + "/"}, standins...)
	cmd := exec.Command(goBin, args...)
	cmd.Dir = repoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build of the stand-ins: %w", err)
	}
	bins := map[string][]byte{}
	for _, pkg := range standins {
		name := filepath.Base(pkg)
		if bins[name], err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	return bins, nil
}

// OCI image config and manifest, only the fields written here.
type (
	imageConfig struct {
		Created      string          `json:"created"`
		Architecture string          `json:"architecture"`
		OS           string          `json:"os"`
		Config       containerConfig `json:"config"`
		RootFS       rootFS          `json:"rootfs"`
	}
	rootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	manifest struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
)

// assemble builds the config and manifest blobs of one image.
func assemble(b *builder, s spec) (config, man blob, err error) {
	cfg := imageConfig{
		Created: epoch.Format(time.RFC3339), Architecture: runtime.GOARCH, OS: "linux",
		Config: s.config, RootFS: rootFS{Type: "layers"},
	}
	cfg.Config.Labels = map[string]string{idLabel: s.names[0]}
	m := manifest{SchemaVersion: 2, MediaType: mediaManifest}
	for _, key := range s.layers {
		l, err := b.layer(key)
		if err != nil {
			return blob{}, blob{}, err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		m.Layers = append(m.Layers, descriptor{MediaType: mediaLayer, Digest: l.gz.digest, Size: int64(len(l.gz.data))})
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		return blob{}, blob{}, err
	}
	config = newBlob(cj)
	m.Config = descriptor{MediaType: mediaConfig, Digest: config.digest, Size: int64(len(cj))}
	mj, err := json.Marshal(m)
	if err != nil {
		return blob{}, blob{}, err
	}
	return config, newBlob(mj), nil
}

// push uploads the image under name unless the registry already has that
// exact manifest there. Blobs go first: a registry rejects a manifest whose
// blobs it does not hold.
func push(reg *registry, name string, b *builder, s spec, config, man blob) (string, error) {
	repo, tag, err := repoTag(name)
	if err != nil {
		return "", err
	}
	have, err := reg.manifestDigest(repo, tag)
	if err != nil {
		return "", err
	}
	if have == man.digest {
		return "present", nil
	}
	for _, key := range s.layers {
		l, err := b.layer(key)
		if err != nil {
			return "", err
		}
		if err := reg.pushBlob(repo, l.gz); err != nil {
			return "", err
		}
	}
	if err := reg.pushBlob(repo, config); err != nil {
		return "", err
	}
	if err := reg.putManifest(repo, tag, man); err != nil {
		return "", err
	}
	if have != "" {
		return "replaced " + have, nil
	}
	return "pushed", nil
}
