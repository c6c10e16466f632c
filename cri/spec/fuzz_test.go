package spec

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func marshal(f *testing.F, m proto.Message) []byte {
	f.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzValidateSandboxConfig feeds arbitrary RunPodSandbox configs (as
// protobuf bytes, the way they arrive over gRPC) to the validator and, for
// configs it accepts, to SandboxOpts. Neither may panic. The options are
// not applied: that reads files named by the input.
func FuzzValidateSandboxConfig(f *testing.F) {
	f.Add(marshal(f, testSandboxConfig()))
	full := testSandboxConfig()
	full.DnsConfig = &runtime.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc"}, Options: []string{"ndots:5"}}
	full.PortMappings = []*runtime.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"}}
	full.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"}
	full.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_NODE},
		RunAsUser:        &runtime.Int64Value{Value: 1000},
		RunAsGroup:       &runtime.Int64Value{Value: 1000},
		Seccomp:          &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p"},
	}
	f.Add(marshal(f, full))
	f.Add(marshal(f, &runtime.PodSandboxConfig{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var c runtime.PodSandboxConfig
		if err := proto.Unmarshal(data, &c); err != nil {
			return
		}
		if err := ValidateSandboxConfig(&c); err != nil {
			return
		}
		sb := Sandbox{ID: "fuzz", Config: &c, NetNSPath: "/var/run/netns/x", ShmPath: "/shm", ResolvPath: "/resolv"}
		_, _ = SandboxOpts(sb, pauseImage, testRuntime)
		_ = CgroupsPath(c.GetLinux().GetCgroupParent(), "fuzz", CgroupDriverSystemd)
	})
}

// FuzzValidateContainerConfig does the same for CreateContainer: a
// container config and the sandbox config it belongs to. For accepted
// configs the pure parts of ContainerOpts run too (mount preparation is
// skipped: it creates host directories).
func FuzzValidateContainerConfig(f *testing.F) {
	sb := marshal(f, testSandboxConfig())
	f.Add(marshal(f, testContainerConfig()), sb)
	full := testContainerConfig()
	full.Envs = []*runtime.KeyValue{{Key: "A", Value: []byte("1")}}
	full.Mounts = []*runtime.Mount{{HostPath: "/data", ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true}}
	full.Devices = []*runtime.Device{{HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "rw"}}
	full.Linux = &runtime.LinuxContainerConfig{
		Resources: &runtime.LinuxContainerResources{CpuShares: 2, MemoryLimitInBytes: 1 << 20},
		SecurityContext: &runtime.LinuxContainerSecurityContext{
			RunAsUser:          &runtime.Int64Value{Value: 1000},
			SupplementalGroups: []int64{1234},
			Capabilities:       &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"NET_RAW"}},
			NamespaceOptions:   &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "t"},
			Seccomp:            &runtime.SecurityProfile{},
		},
	}
	f.Add(marshal(f, full), sb)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, cdata, sdata []byte) {
		var c runtime.ContainerConfig
		var s runtime.PodSandboxConfig
		if proto.Unmarshal(cdata, &c) != nil || proto.Unmarshal(sdata, &s) != nil {
			return
		}
		if err := ValidateContainerConfig(&c, &s); err != nil {
			return
		}
		sc := c.GetLinux().GetSecurityContext()
		_, _ = processArgs(&c, testImage)
		_, _ = capabilityOpts(sc.GetCapabilities())
		_, _ = containerUserOpts(sc, "1000:1000")
		_, _ = seccompOpts("config.linux.security_context.seccomp", sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetPrivileged(), testRuntime)
		_ = checkAppArmor("config.linux.security_context.apparmor", sc.GetApparmor(), sc.GetApparmorProfile())
		sandbox := Sandbox{ID: "fuzz", Config: &s, Pid: 1}
		_, _ = containerNamespaceOpts(&c, sandbox, func(string) (uint32, error) { return 2, nil })
		_ = maskedPathOpts(sc)
	})
}
