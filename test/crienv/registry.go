package crienv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// DefaultRegistryAddr is where hack/registry.sh serves the test images;
// $BERTH_TEST_REGISTRY overrides it.
const DefaultRegistryAddr = "127.0.0.1:5000"

var registry struct {
	once sync.Once
	addr string
	log  string // test-images.sh output
	err  error
}

// EnsureRegistry makes critest's images pullable under their public names
// and returns the registry address and a hosts.toml directory (containerd's
// registry config_path layout) that mirrors every registry to it.
//
// The first call in a test process runs hack/test-images.sh: it starts the
// registry unless something already serves at the address, then builds and
// pushes the images (unchanged ones are skipped, so this takes seconds once
// the registry's storage holds them). The registry is left running on
// purpose, like any shared service: other test processes (go test runs
// packages in parallel) and the critest harness use it too. Stop it with
// `hack/registry.sh stop`. The hosts directory is the test's own temporary
// directory: tests never write /etc.
func EnsureRegistry(t testing.TB) (addr, hostsDir string) {
	t.Helper()
	Require(t)
	registry.once.Do(setupRegistry)
	if registry.err != nil {
		t.Fatalf("test registry: %v\n%s", registry.err, registry.log)
	}
	hostsDir = filepath.Join(t.TempDir(), "certs.d")
	if err := WriteHostsTOML(hostsDir, registry.addr); err != nil {
		t.Fatal(err)
	}
	return registry.addr, hostsDir
}

// WriteHostsTOML writes DIR/_default/hosts.toml sending every registry's
// pulls and resolves to the plain-HTTP registry at addr, the same file
// hack/test-images.sh writes.
func WriteHostsTOML(dir, addr string) error {
	if err := os.MkdirAll(filepath.Join(dir, "_default"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "_default", "hosts.toml"), fmt.Appendf(nil,
		"[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+addr), 0o644)
}

func setupRegistry() {
	r := &registry
	r.addr = os.Getenv("BERTH_TEST_REGISTRY")
	if r.addr == "" {
		r.addr = DefaultRegistryAddr
	}
	repo, err := moduleRoot()
	if err != nil {
		r.err = err
		return
	}
	// test-images.sh also writes a hosts.toml; this one is thrown away.
	scratch, err := os.MkdirTemp("", "bti-hosts-")
	if err != nil {
		r.err = err
		return
	}
	defer os.RemoveAll(scratch)
	var out bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(repo, "hack", "test-images.sh"), "--registry", r.addr, "--hosts-dir", scratch)
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = &out, &out
	r.err = cmd.Run()
	r.log = out.String()
}

// moduleRoot finds berth's checkout by walking up from the working
// directory (go test runs in the package directory) to its go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/berthdev/berth\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("berth's go.mod not found above the working directory")
		}
		dir = parent
	}
}
