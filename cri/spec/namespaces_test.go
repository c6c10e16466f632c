package spec

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A POD user namespace puts the mappings on the pause (runc creates the
// namespace, and the pod's network namespace inside it) and makes every
// container join the pause's user namespace with the same mappings.
func TestPodUserNamespace(t *testing.T) {
	m := []*runtime.IDMapping{{ContainerId: 0, HostId: 1000, Length: 100000}}
	nsOpt := &runtime.NamespaceOption{UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: m, Gids: m}}
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}}
	apply := func(opts []oci.SpecOpts) *specs.Spec {
		t.Helper()
		s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}, {Type: specs.PIDNamespace}}}, Process: &specs.Process{}}
		for _, o := range opts {
			if err := o(context.Background(), nil, &containers.Container{ID: "x"}, s); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	userns := func(s *specs.Spec) (specs.LinuxNamespace, bool) {
		for _, n := range s.Linux.Namespaces {
			if n.Type == specs.UserNamespace {
				return n, true
			}
		}
		return specs.LinuxNamespace{}, false
	}

	sb := testSandbox()
	sb.NetNSPath = ""
	sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: nsOpt}
	opts, err := sandboxNamespaceOpts(sb)
	if err != nil {
		t.Fatal(err)
	}
	s := apply(opts)
	if n, ok := userns(s); !ok || n.Path != "" {
		t.Fatalf("pause: user namespace %+v (present %v), want a new one", n, ok)
	}
	if len(s.Linux.UIDMappings) != 1 || s.Linux.UIDMappings[0] != want[0] || s.Linux.GIDMappings[0] != want[0] {
		t.Fatalf("pause mappings %+v / %+v", s.Linux.UIDMappings, s.Linux.GIDMappings)
	}

	sb.Pid = 4242
	copts, err := containerNamespaceOpts(testContainerConfig(), sb, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := apply(copts)
	if n, ok := userns(cs); !ok || n.Path != "/proc/4242/ns/user" {
		t.Fatalf("container: user namespace %+v, want the pause's", n)
	}
	if len(cs.Linux.UIDMappings) != 1 || cs.Linux.UIDMappings[0] != want[0] {
		t.Fatalf("container mappings %+v", cs.Linux.UIDMappings)
	}
}
