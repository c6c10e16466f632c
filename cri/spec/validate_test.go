package spec

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// checkValidation expects nil for want == "" and otherwise an
// InvalidArgument status whose message is exactly want.
func checkValidation(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("expected %q, got nil", want)
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != want {
		t.Fatalf("got %v %q, want InvalidArgument %q", st.Code(), st.Message(), want)
	}
}

func TestValidateSandboxConfig(t *testing.T) {
	i := func(v int64) *runtime.Int64Value { return &runtime.Int64Value{Value: v} }
	sc := func(f func(*runtime.LinuxSandboxSecurityContext)) func(*runtime.PodSandboxConfig) {
		return func(c *runtime.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{}
			f(c.Linux.SecurityContext)
		}
	}
	ns := func(o *runtime.NamespaceOption) func(*runtime.PodSandboxConfig) {
		return sc(func(s *runtime.LinuxSandboxSecurityContext) { s.NamespaceOptions = o })
	}
	tests := []struct {
		name string
		edit func(*runtime.PodSandboxConfig)
		want string
	}{
		{"valid", func(*runtime.PodSandboxConfig) {}, ""},
		{"valid full", func(c *runtime.PodSandboxConfig) {
			c.DnsConfig = &runtime.DNSConfig{Servers: []string{"10.0.0.10", "fd00::a"}, Searches: []string{"ns.svc.cluster.local"}, Options: []string{"ndots:5"}}
			c.PortMappings = []*runtime.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1", Protocol: runtime.Protocol_UDP}, {ContainerPort: 443}}
			c.Linux.Sysctls = map[string]string{"net.ipv4.conf.eth0/100.forwarding": "1"}
			c.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{
				NamespaceOptions:         &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_CONTAINER, Ipc: runtime.NamespaceMode_NODE},
				RunAsUser:                i(0),
				RunAsGroup:               i(2147483647),
				SupplementalGroups:       []int64{1, 2},
				SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict,
				Seccomp:                  &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/p.json"},
				Apparmor:                 &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined},
			}
		}, ""},
		{"metadata", func(c *runtime.PodSandboxConfig) { c.Metadata = nil }, "config.metadata is required"},
		{"name", func(c *runtime.PodSandboxConfig) { c.Metadata.Name = "" }, "config.metadata.name is required"},
		{"namespace", func(c *runtime.PodSandboxConfig) { c.Metadata.Namespace = "" }, "config.metadata.namespace is required"},
		{"uid", func(c *runtime.PodSandboxConfig) { c.Metadata.Uid = "" }, "config.metadata.uid is required"},
		{"control character", func(c *runtime.PodSandboxConfig) { c.Metadata.Name = "a\nb" }, `config.metadata.name "a\nb" contains a control character`},
		{"hostname too long", func(c *runtime.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }, "config.hostname must be at most 64 bytes, got 65"},
		{"hostname with slash", func(c *runtime.PodSandboxConfig) { c.Hostname = "a/b" }, `config.hostname "a/b" contains an invalid character`},
		{"relative log directory", func(c *runtime.PodSandboxConfig) { c.LogDirectory = "logs" }, `config.log_directory "logs" must be an absolute path`},
		{"dns injection", func(c *runtime.PodSandboxConfig) {
			c.DnsConfig = &runtime.DNSConfig{Searches: []string{"a\nnameserver 1.1.1.1"}}
		}, `config.dns_config.searches[0] "a\nnameserver 1.1.1.1" must be a non-empty word without whitespace`},
		{"dns empty option", func(c *runtime.PodSandboxConfig) { c.DnsConfig = &runtime.DNSConfig{Options: []string{""}} },
			`config.dns_config.options[0] "" must be a non-empty word without whitespace`},
		{"dns server not an IP", func(c *runtime.PodSandboxConfig) { c.DnsConfig = &runtime.DNSConfig{Servers: []string{"dns.example"}} },
			`config.dns_config.servers[0] "dns.example" is not an IP address`},
		{"port protocol", func(c *runtime.PodSandboxConfig) {
			c.PortMappings = []*runtime.PortMapping{{ContainerPort: 1, Protocol: 9}}
		}, "config.port_mappings[0].protocol: unknown value 9"},
		{"container port", func(c *runtime.PodSandboxConfig) { c.PortMappings = []*runtime.PortMapping{{ContainerPort: 0}} },
			"config.port_mappings[0].container_port 0 is out of range (1-65535)"},
		{"host port", func(c *runtime.PodSandboxConfig) {
			c.PortMappings = []*runtime.PortMapping{{ContainerPort: 80}, {ContainerPort: 80, HostPort: 70000}}
		}, "config.port_mappings[1].host_port 70000 is out of range (0-65535)"},
		{"host ip", func(c *runtime.PodSandboxConfig) {
			c.PortMappings = []*runtime.PortMapping{{ContainerPort: 80, HostIp: "localhost"}}
		}, `config.port_mappings[0].host_ip "localhost" is not an IP address`},
		{"cgroup parent", func(c *runtime.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods/../../x" },
			`config.linux.cgroup_parent "/kubepods/../../x" must not contain ".."`},
		{"sysctl name", func(c *runtime.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net/../../x": "1"} },
			`config.linux.sysctls: invalid sysctl name "net/../../x"`},
		{"empty sysctl name", func(c *runtime.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"": "1"} },
			`config.linux.sysctls: invalid sysctl name ""`},
		{"network container", ns(&runtime.NamespaceOption{Network: runtime.NamespaceMode_CONTAINER}),
			"config.linux.security_context.namespace_options.network: mode CONTAINER is not supported here"},
		{"ipc target", ns(&runtime.NamespaceOption{Ipc: runtime.NamespaceMode_TARGET}),
			"config.linux.security_context.namespace_options.ipc: mode TARGET is not supported here"},
		{"pid target", ns(&runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET}),
			"config.linux.security_context.namespace_options.pid: mode TARGET is not supported here"},
		{"unknown mode", ns(&runtime.NamespaceOption{Pid: 42}),
			"config.linux.security_context.namespace_options.pid: unknown mode 42"},
		{"userns mode", ns(&runtime.NamespaceOption{UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_CONTAINER}}),
			"config.linux.security_context.namespace_options.userns_options.mode CONTAINER is not supported (want NODE or POD)"},
		{"group without user", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.RunAsGroup = i(1) }),
			"config.linux.security_context.run_as_group is set without run_as_user"},
		{"negative uid", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.RunAsUser = i(-1) }),
			"config.linux.security_context.run_as_user -1 is out of range (0-2147483647)"},
		{"huge gid", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.RunAsUser = i(0); s.RunAsGroup = i(1 << 32) }),
			"config.linux.security_context.run_as_group 4294967296 is out of range (0-2147483647)"},
		{"negative group", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.SupplementalGroups = []int64{1, -5} }),
			"config.linux.security_context.supplemental_groups[1] -5 is out of range (0-2147483647)"},
		{"policy", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.SupplementalGroupsPolicy = 3 }),
			"config.linux.security_context.supplemental_groups_policy: unknown value 3"},
		{"seccomp localhost without ref", sc(func(s *runtime.LinuxSandboxSecurityContext) {
			s.Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost}
		}), "config.linux.security_context.seccomp.localhost_ref is required with profile_type Localhost"},
		{"seccomp profile path", sc(func(s *runtime.LinuxSandboxSecurityContext) { s.SeccompProfilePath = "nope" }),
			`config.linux.security_context.seccomp_profile_path: invalid profile "nope" (want "runtime/default", "unconfined" or "localhost/"<path>)`},
		{"apparmor shape", sc(func(s *runtime.LinuxSandboxSecurityContext) {
			s.Apparmor = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault, LocalhostRef: "x"}
		}), "config.linux.security_context.apparmor.localhost_ref must only be set with profile_type Localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testSandboxConfig()
			tc.edit(c)
			checkValidation(t, ValidateSandboxConfig(c), tc.want)
		})
	}
	checkValidation(t, ValidateSandboxConfig(nil), "config is required")
	checkValidation(t, ValidateSandboxConfig(&runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Name: "n", Namespace: "ns", Uid: "u"}}), "")
}

func TestValidateContainerConfig(t *testing.T) {
	i := func(v int64) *runtime.Int64Value { return &runtime.Int64Value{Value: v} }
	sc := func(f func(*runtime.LinuxContainerSecurityContext)) func(*runtime.ContainerConfig, *runtime.PodSandboxConfig) {
		return func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) {
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{}}
			f(c.Linux.SecurityContext)
		}
	}
	mnt := func(m *runtime.Mount) func(*runtime.ContainerConfig, *runtime.PodSandboxConfig) {
		return func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Mounts = []*runtime.Mount{m} }
	}
	dev := func(d *runtime.Device) func(*runtime.ContainerConfig, *runtime.PodSandboxConfig) {
		return func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Devices = []*runtime.Device{d} }
	}
	tests := []struct {
		name string
		edit func(*runtime.ContainerConfig, *runtime.PodSandboxConfig)
		want string
	}{
		{"valid", func(*runtime.ContainerConfig, *runtime.PodSandboxConfig) {}, ""},
		{"valid full", func(c *runtime.ContainerConfig, sb *runtime.PodSandboxConfig) {
			sb.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Privileged: true,
				NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}}
			c.WorkingDir = "/srv"
			c.LogPath = "app/0.log"
			c.Envs = []*runtime.KeyValue{{Key: "A", Value: []byte("b=c")}}
			c.Mounts = []*runtime.Mount{
				{HostPath: "/data", ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true},
				{ContainerPath: "/img", Image: &runtime.ImageSpec{Image: "busybox"}},
				{HostPath: "/x", ContainerPath: "/x", Propagation: runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			}
			c.Devices = []*runtime.Device{{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "mrw"}, {HostPath: "/dev/null", ContainerPath: "/dev/n"}}
			c.Linux = &runtime.LinuxContainerConfig{
				Resources: &runtime.LinuxContainerResources{OomScoreAdj: -1000},
				SecurityContext: &runtime.LinuxContainerSecurityContext{
					Privileged:         true,
					RunAsUsername:      "www-data",
					RunAsGroup:         i(5),
					NamespaceOptions:   &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE},
					Capabilities:       &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"net_raw"}},
					MaskedPaths:        []string{"/proc/kcore"},
					ReadonlyPaths:      []string{"/proc/sys"},
					SeccompProfilePath: "localhost//p.json",
					ApparmorProfile:    "unconfined",
				},
			}
		}, ""},
		{"metadata", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Metadata = nil }, "config.metadata is required"},
		{"name", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Metadata.Name = "" }, "config.metadata.name is required"},
		{"name control", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Metadata.Name = "a\x00" },
			`config.metadata.name "a\x00" contains a control character`},
		{"image", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Image = nil }, "config.image is required"},
		{"image name", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Image.Image = "" }, "config.image.image is required"},
		{"command NUL", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Command = []string{"a", "b\x00"} }, "config.command[1] contains a NUL byte"},
		{"args NUL", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.Args = []string{"\x00"} }, "config.args[0] contains a NUL byte"},
		{"working dir", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.WorkingDir = "srv" }, `config.working_dir "srv" must be an absolute path`},
		{"env key", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) {
			c.Envs = []*runtime.KeyValue{{Value: []byte("x")}}
		}, "config.envs[0].key is required"},
		{"env key with =", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) {
			c.Envs = []*runtime.KeyValue{{Key: "A"}, {Key: "B=C"}}
		}, `config.envs[1].key "B=C" must not contain '=' or NUL`},
		{"env value NUL", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) {
			c.Envs = []*runtime.KeyValue{{Key: "A", Value: []byte("x\x00")}}
		}, "config.envs[0].value contains a NUL byte"},
		{"mount container path", mnt(&runtime.Mount{HostPath: "/a"}), "config.mounts[0].container_path is required"},
		{"mount relative container path", mnt(&runtime.Mount{HostPath: "/a", ContainerPath: "a"}), `config.mounts[0].container_path "a" must be an absolute path`},
		{"mount host path", mnt(&runtime.Mount{ContainerPath: "/a"}), "config.mounts[0].host_path is required"},
		{"mount relative host path", mnt(&runtime.Mount{ContainerPath: "/a", HostPath: "a"}), `config.mounts[0].host_path "a" must be an absolute path`},
		{"mount propagation", mnt(&runtime.Mount{ContainerPath: "/a", HostPath: "/a", Propagation: 3}), "config.mounts[0].propagation: unknown value 3"},
		{"rro without readonly", mnt(&runtime.Mount{ContainerPath: "/a", HostPath: "/a", RecursiveReadOnly: true}),
			"config.mounts[0].recursive_read_only requires readonly"},
		{"rro with propagation", mnt(&runtime.Mount{ContainerPath: "/a", HostPath: "/a", Readonly: true, RecursiveReadOnly: true,
			Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}),
			"config.mounts[0].recursive_read_only requires propagation PROPAGATION_PRIVATE, got PROPAGATION_HOST_TO_CONTAINER"},
		{"device host path", dev(&runtime.Device{ContainerPath: "/dev/x"}), "config.devices[0].host_path is required"},
		{"device relative host path", dev(&runtime.Device{HostPath: "dev/x", ContainerPath: "/dev/x"}), `config.devices[0].host_path "dev/x" must be an absolute path`},
		{"device container path", dev(&runtime.Device{HostPath: "/dev/x"}), "config.devices[0].container_path is required"},
		{"device relative container path", dev(&runtime.Device{HostPath: "/dev/x", ContainerPath: "x"}), `config.devices[0].container_path "x" must be an absolute path`},
		{"device permissions", dev(&runtime.Device{HostPath: "/dev/x", ContainerPath: "/dev/x", Permissions: "rwx"}),
			`config.devices[0].permissions "rwx" may only contain r, w and m`},
		{"log path escapes", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.LogPath = "../../etc/passwd" },
			`config.log_path "../../etc/passwd" must be a relative path inside the sandbox log directory`},
		{"absolute log path", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) { c.LogPath = "/var/log/x" },
			`config.log_path "/var/log/x" must be a relative path inside the sandbox log directory`},
		{"oom score", func(c *runtime.ContainerConfig, _ *runtime.PodSandboxConfig) {
			c.Linux = &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{OomScoreAdj: 1001}}
		}, "config.linux.resources.oom_score_adj 1001 is out of range (-1000..1000)"},
		{"privileged in unprivileged sandbox", sc(func(s *runtime.LinuxContainerSecurityContext) { s.Privileged = true }),
			"config.linux.security_context.privileged: no privileged container allowed in sandbox"},
		{"group without user", sc(func(s *runtime.LinuxContainerSecurityContext) { s.RunAsGroup = i(1002) }),
			"config.linux.security_context.run_as_group is set without run_as_user or run_as_username"},
		{"bad username", sc(func(s *runtime.LinuxContainerSecurityContext) { s.RunAsUsername = "a:b" }),
			`config.linux.security_context.run_as_username "a:b" is not a valid user name`},
		{"uid range", sc(func(s *runtime.LinuxContainerSecurityContext) { s.RunAsUser = i(-2) }),
			"config.linux.security_context.run_as_user -2 is out of range (0-2147483647)"},
		{"group range", sc(func(s *runtime.LinuxContainerSecurityContext) { s.SupplementalGroups = []int64{1 << 40} }),
			"config.linux.security_context.supplemental_groups[0] 1099511627776 is out of range (0-2147483647)"},
		{"policy", sc(func(s *runtime.LinuxContainerSecurityContext) { s.SupplementalGroupsPolicy = -1 }),
			"config.linux.security_context.supplemental_groups_policy: unknown value -1"},
		{"unknown ns mode", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.NamespaceOptions = &runtime.NamespaceOption{Ipc: 8}
		}), "config.linux.security_context.namespace_options.ipc: unknown mode 8"},
		{"target without id", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET}
		}), "config.linux.security_context.namespace_options.target_id is required for pid TARGET"},
		{"host pid in a pod pid sandbox", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.NamespaceOptions = &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}
		}), "config.linux.security_context.namespace_options.pid is NODE but the sandbox does not use the host PID namespace"},
		{"userns mode", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.NamespaceOptions = &runtime.NamespaceOption{UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_TARGET}}
		}), "config.linux.security_context.namespace_options.userns_options.mode: mode TARGET is not supported here"},
		{"empty capability", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.Capabilities = &runtime.Capability{DropCapabilities: []string{"NET_RAW", ""}}
		}), `config.linux.security_context.capabilities.drop_capabilities[1] "" is not a capability name`},
		{"masked path", sc(func(s *runtime.LinuxContainerSecurityContext) { s.MaskedPaths = []string{"proc/kcore"} }),
			`config.linux.security_context.masked_paths[0] "proc/kcore" must be an absolute path`},
		{"readonly path", sc(func(s *runtime.LinuxContainerSecurityContext) { s.ReadonlyPaths = []string{""} }),
			`config.linux.security_context.readonly_paths[0] "" must be an absolute path`},
		{"seccomp type", sc(func(s *runtime.LinuxContainerSecurityContext) {
			s.Seccomp = &runtime.SecurityProfile{ProfileType: 5}
		}), "config.linux.security_context.seccomp.profile_type: unknown value 5"},
		{"apparmor profile string", sc(func(s *runtime.LinuxContainerSecurityContext) { s.ApparmorProfile = "x" }),
			`config.linux.security_context.apparmor_profile: invalid profile "x" (want "runtime/default", "unconfined" or "localhost/"<path>)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			sb := testSandboxConfig()
			tc.edit(c, sb)
			checkValidation(t, ValidateContainerConfig(c, sb), tc.want)
		})
	}
	checkValidation(t, ValidateContainerConfig(nil, nil), "config is required")
	// Without the sandbox config the cross checks are skipped.
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{Privileged: true}}
	checkValidation(t, ValidateContainerConfig(c, nil), "")
}
