package spec

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const testNamespace = "k8s.io"

// testCtx is a namespaced context, as containerd's spec generation needs.
func testCtx() context.Context {
	return namespaces.WithNamespace(context.Background(), testNamespace)
}

// generate builds a spec the way containerd.WithNewSpec does, without a
// client: containerd's default spec, then the options.
func generate(ctx context.Context, id string, opts []oci.SpecOpts) (*specs.Spec, error) {
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, opts...)
}

// setHost replaces the probed host facts for one test.
func setHost(t *testing.T, h hostFacts) {
	t.Helper()
	old := probeHost
	probeHost = func() hostFacts { return h }
	t.Cleanup(func() { probeHost = old })
}

// defaultHost is a cgroup v1 host with swap accounting and no hugetlb,
// like the development machine.
var defaultHost = hostFacts{swap: true}

// testRootfs writes a small image filesystem with the users critest's
// images have.
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\n" +
		"www-data:x:33:33:www-data:/var/www:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/:/bin/false\n" +
		"default-user:x:1000:1000::/home/default-user:/bin/sh\n"
	group := "root:x:0:\n" +
		"wheel:x:10:root\n" +
		"www-data:x:33:\n" +
		"default-user:x:1000:\n" +
		"group-defined-in-image:x:50000:default-user\n" +
		"nogroup:x:65534:\n"
	for name, content := range map[string]string{"etc/passwd": passwd, "etc/group": group} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func testSandboxConfig() *runtime.PodSandboxConfig {
	return &runtime.PodSandboxConfig{
		Metadata:     &runtime.PodSandboxMetadata{Name: "pod", Namespace: "ns", Uid: "uid-1", Attempt: 1},
		Hostname:     "podhost",
		LogDirectory: "/var/log/pods/ns_pod_uid-1",
		Linux:        &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod-uid-1"},
	}
}

func testSandbox() Sandbox {
	return Sandbox{
		ID:        "sb1",
		Config:    testSandboxConfig(),
		Pid:       4242,
		NetNSPath: "/var/run/netns/cni-1",
	}
}

func testContainerConfig() *runtime.ContainerConfig {
	return &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: "app"},
		Image:    &runtime.ImageSpec{Image: "busybox"},
		Command:  []string{"sleep", "100"},
	}
}

var testImage = imagespec.ImageConfig{
	Env:        []string{"PATH=/usr/bin:/bin", "FROM_IMAGE=1", "OVERRIDE=image"},
	Cmd:        []string{"sh"},
	WorkingDir: "/work",
}

var testRuntime = Runtime{CgroupDriver: CgroupDriverCgroupfs, SeccompEnabled: true}

// containerSpec builds an application container spec with a test rootfs
// for user lookups.
func containerSpec(t *testing.T, c *runtime.ContainerConfig, sb Sandbox, img imagespec.ImageConfig, rt Runtime) (*specs.Spec, error) {
	t.Helper()
	opts, err := ContainerOpts("ctr1", c, sb, img, "docker.io/library/busybox:latest", rt, nil)
	if err != nil {
		return nil, err
	}
	return generate(WithRootfsDir(testCtx(), testRootfs(t)), "ctr1", opts)
}

func mustContainerSpec(t *testing.T, c *runtime.ContainerConfig, sb Sandbox) *specs.Spec {
	t.Helper()
	s, err := containerSpec(t, c, sb, testImage, testRuntime)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantCode checks a gRPC status code and, if msg is not empty, that the
// message contains it.
func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %v error containing %q, got nil", code, msg)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("code = %v, want %v (err: %v)", got, code, err)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q does not contain %q", err, msg)
	}
}

func findMount(s *specs.Spec, dst string) (specs.Mount, bool) {
	for _, m := range s.Mounts {
		if m.Destination == dst {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func countMounts(s *specs.Spec, dst string) int {
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == dst {
			n++
		}
	}
	return n
}

func findNS(s *specs.Spec, t specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return ns, true
		}
	}
	return specs.LinuxNamespace{}, false
}

func hasEnv(s *specs.Spec, kv string) bool { return slices.Contains(s.Process.Env, kv) }

// fakeMounts is a LookupMount that answers from a table of mount points
// and their optional fields ("shared:1", "master:2" or "").
func fakeMounts(table map[string]string) func(string) (mount.Info, error) {
	return func(p string) (mount.Info, error) {
		best := "/"
		for mp := range table {
			if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
				best = mp
			}
		}
		return mount.Info{Mountpoint: best, Optional: table[best]}, nil
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// equalJSON compares through JSON so that nil and empty, and pointers to
// equal values, compare equal.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	return toJSON(t, a) == toJSON(t, b)
}

type mountInfo = mount.Info
