package spec

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestMain pins the host facts so that results do not depend on the
// machine's cgroup setup; tests that need other facts use setHost.
func TestMain(m *testing.M) {
	probeHost = func() hostFacts { return defaultHost }
	os.Exit(m.Run())
}

var pauseImage = imagespec.ImageConfig{
	User:       "65535:65535",
	Env:        []string{"PATH=/bin"},
	Entrypoint: []string{"/pause"},
	Cmd:        []string{"-v"},
	WorkingDir: "/",
}

func sandboxSpec(t *testing.T, sb Sandbox, img imagespec.ImageConfig, rt Runtime) (*specs.Spec, error) {
	t.Helper()
	opts, err := SandboxOpts(sb, img, rt)
	if err != nil {
		return nil, err
	}
	return generate(WithRootfsDir(testCtx(), testRootfs(t)), sb.ID, opts)
}

func mustSandboxSpec(t *testing.T, sb Sandbox) *specs.Spec {
	t.Helper()
	s, err := sandboxSpec(t, sb, pauseImage, testRuntime)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSandboxOptsDefaults(t *testing.T) {
	sb := testSandbox()
	sb.ShmPath = "/run/berth/sandboxes/sb1/shm"
	sb.ResolvPath = "/var/lib/berth/sandboxes/sb1/resolv.conf"
	sb.ImageName = "registry.k8s.io/pause:3.10.2"
	s := mustSandboxSpec(t, sb)

	if s.Root.Path != "rootfs" || !s.Root.Readonly {
		t.Errorf("root = %+v, want read-only rootfs", s.Root)
	}
	if !slices.Equal(s.Process.Args, []string{"/pause", "-v"}) {
		t.Errorf("args = %q", s.Process.Args)
	}
	if !slices.Equal(s.Process.Env, []string{"PATH=/bin"}) {
		t.Errorf("env = %q", s.Process.Env)
	}
	if s.Hostname != "podhost" {
		t.Errorf("hostname = %q", s.Hostname)
	}
	if s.Process.User.UID != 65535 || s.Process.User.GID != 65535 {
		t.Errorf("user = %+v", s.Process.User)
	}
	if s.Linux.CgroupsPath != "/kubepods/pod-uid-1/sb1" {
		t.Errorf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}
	if ns, ok := findNS(s, specs.NetworkNamespace); !ok || ns.Path != sb.NetNSPath {
		t.Errorf("network namespace = %+v, %v", ns, ok)
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace} {
		if ns, ok := findNS(s, typ); !ok || ns.Path != "" {
			t.Errorf("%s namespace = %+v, %v; want a new one", typ, ns, ok)
		}
	}
	if got := s.Linux.Sysctl; got[sysctlUnprivilegedPortStart] != "0" || got[sysctlPingGroupRange] != "0 2147483647" {
		t.Errorf("sysctls = %v", got)
	}
	if sh := s.Linux.Resources.CPU.Shares; sh == nil || *sh != 2 {
		t.Errorf("cpu shares = %v", sh)
	}
	if adj := s.Process.OOMScoreAdj; adj == nil || *adj != -998 {
		t.Errorf("oom_score_adj = %v", adj)
	}
	if s.Linux.Seccomp != nil || s.Process.Rlimits != nil || s.Process.ApparmorProfile != "" {
		t.Errorf("default security settings left: seccomp=%v rlimits=%v apparmor=%q", s.Linux.Seccomp, s.Process.Rlimits, s.Process.ApparmorProfile)
	}
	if _, ok := findMount(s, "/run"); ok {
		t.Error("/run tmpfs still mounted")
	}
	if m, ok := findMount(s, "/dev/shm"); !ok || m.Source != sb.ShmPath || m.Type != "bind" ||
		!slices.Equal(m.Options, []string{"rbind", "ro", "nosuid", "nodev", "noexec"}) || countMounts(s, "/dev/shm") != 1 {
		t.Errorf("/dev/shm = %+v (count %d)", m, countMounts(s, "/dev/shm"))
	}
	if m, ok := findMount(s, "/etc/resolv.conf"); !ok || m.Source != sb.ResolvPath {
		t.Errorf("resolv.conf = %+v, %v", m, ok)
	}
	want := map[string]string{
		AnnotationContainerType:    "sandbox",
		AnnotationSandboxID:        "sb1",
		AnnotationSandboxName:      "pod",
		AnnotationSandboxNamespace: "ns",
		AnnotationSandboxUID:       "uid-1",
		AnnotationSandboxLogDir:    "/var/log/pods/ns_pod_uid-1",
		AnnotationSandboxImageName: "registry.k8s.io/pause:3.10.2",
	}
	for k, v := range want {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	if _, ok := s.Annotations[AnnotationSandboxCPUShares]; ok {
		t.Error("resource annotations without resources")
	}
}

func TestSandboxOptsNamespaces(t *testing.T) {
	tests := []struct {
		name       string
		ns         *runtime.NamespaceOption
		shmPath    string
		wantAbsent []specs.LinuxNamespaceType
		wantShm    string // "" means the default tmpfs stays
		hostname   bool
		sysctls    bool
	}{
		{"pod namespaces", nil, "/shm", nil, "/shm", true, true},
		{"host network", &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE}, "/shm",
			[]specs.LinuxNamespaceType{specs.NetworkNamespace, specs.UTSNamespace}, "/shm", false, false},
		{"host pid", &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, "/shm",
			[]specs.LinuxNamespaceType{specs.PIDNamespace}, "/shm", true, true},
		{"host ipc uses the host's /dev/shm", &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}, "/shm",
			[]specs.LinuxNamespaceType{specs.IPCNamespace}, "/dev/shm", true, true},
		{"no shm dir keeps the tmpfs", nil, "", nil, "", true, true},
		{"container pid mode is a new pid namespace", &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}, "", nil, "", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			sb.ShmPath = tc.shmPath
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: tc.ns}
			if tc.ns.GetNetwork() == runtime.NamespaceMode_NODE {
				sb.NetNSPath = ""
			}
			s := mustSandboxSpec(t, sb)
			for _, typ := range tc.wantAbsent {
				if _, ok := findNS(s, typ); ok {
					t.Errorf("%s namespace present", typ)
				}
			}
			for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.UTSNamespace, specs.PIDNamespace, specs.IPCNamespace} {
				if !slices.Contains(tc.wantAbsent, typ) {
					if _, ok := findNS(s, typ); !ok {
						t.Errorf("%s namespace missing", typ)
					}
				}
			}
			m, _ := findMount(s, "/dev/shm")
			if tc.wantShm == "" {
				if m.Type != "tmpfs" {
					t.Errorf("/dev/shm = %+v, want the default tmpfs", m)
				}
			} else if m.Type != "bind" || m.Source != tc.wantShm {
				t.Errorf("/dev/shm = %+v, want bind of %s", m, tc.wantShm)
			}
			if got := s.Hostname != ""; got != tc.hostname {
				t.Errorf("hostname %q set = %v, want %v", s.Hostname, got, tc.hostname)
			}
			_, has := s.Linux.Sysctl[sysctlUnprivilegedPortStart]
			if has != tc.sysctls {
				t.Errorf("default sysctls present = %v, want %v", has, tc.sysctls)
			}
		})
	}
}

func TestSandboxSysctls(t *testing.T) {
	tests := []struct {
		name     string
		in       map[string]string
		hostNet  bool
		inUserNS bool
		want     map[string]string
	}{
		{"defaults", nil, false, false, map[string]string{sysctlUnprivilegedPortStart: "0", sysctlPingGroupRange: "0 2147483647"}},
		{"pod values win", map[string]string{sysctlUnprivilegedPortStart: "1024", sysctlPingGroupRange: "1 1", "kernel.shm_rmid_forced": "1"}, false, false,
			map[string]string{sysctlUnprivilegedPortStart: "1024", sysctlPingGroupRange: "1 1", "kernel.shm_rmid_forced": "1"}},
		{"host network gets no defaults", map[string]string{"kernel.msgmax": "1"}, true, false, map[string]string{"kernel.msgmax": "1"}},
		{"no ping range in a user namespace", nil, false, true, map[string]string{sysctlUnprivilegedPortStart: "0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtime.PodSandboxConfig{Linux: &runtime.LinuxPodSandboxConfig{Sysctls: tc.in}}
			got := sandboxSysctls(cfg, tc.hostNet, tc.inUserNS)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	// The config's map must not be modified.
	in := map[string]string{"kernel.msgmax": "1"}
	sandboxSysctls(&runtime.PodSandboxConfig{Linux: &runtime.LinuxPodSandboxConfig{Sysctls: in}}, false, false)
	if len(in) != 1 {
		t.Fatalf("config sysctls modified: %v", in)
	}
}

func TestSandboxOptsSysctlsInSpec(t *testing.T) {
	sb := testSandbox()
	sb.Config.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"}
	s := mustSandboxSpec(t, sb)
	if s.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" || s.Linux.Sysctl[sysctlUnprivilegedPortStart] != "0" {
		t.Fatalf("sysctls = %v", s.Linux.Sysctl)
	}
	setHost(t, hostFacts{inUserNS: true})
	s = mustSandboxSpec(t, sb)
	if _, ok := s.Linux.Sysctl[sysctlPingGroupRange]; ok {
		t.Fatal("ping_group_range set inside a user namespace")
	}
}

func TestSandboxOptsCgroups(t *testing.T) {
	tests := []struct {
		name, parent, driver, want string
	}{
		{"cgroupfs", "/kubepods/besteffort/pod1", CgroupDriverCgroupfs, "/kubepods/besteffort/pod1/sb1"},
		{"cgroupfs without parent keeps containerd's default", "", CgroupDriverCgroupfs, "/" + testNamespace + "/sb1"},
		{"systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice", CgroupDriverSystemd,
			"kubepods-besteffort-pod1.slice:cri-containerd:sb1"},
		{"systemd without parent", "", CgroupDriverSystemd, ":cri-containerd:sb1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			sb.Config.Linux.CgroupParent = tc.parent
			rt := testRuntime
			rt.CgroupDriver = tc.driver
			s, err := sandboxSpec(t, sb, pauseImage, rt)
			if err != nil {
				t.Fatal(err)
			}
			if s.Linux.CgroupsPath != tc.want {
				t.Fatalf("cgroupsPath = %q, want %q", s.Linux.CgroupsPath, tc.want)
			}
		})
	}
}

func TestSandboxOptsUser(t *testing.T) {
	tests := []struct {
		name     string
		sc       *runtime.LinuxSandboxSecurityContext
		imgUser  string
		uid, gid uint32
		groups   []uint32
	}{
		{"image user", nil, "65535:65535", 65535, 65535, []uint32{65535}},
		{"image user by name", nil, "www-data", 33, 33, []uint32{33}},
		{"no user is root", nil, "", 0, 0, nil},
		{"run_as_user and run_as_group", &runtime.LinuxSandboxSecurityContext{
			RunAsUser: &runtime.Int64Value{Value: 1000}, RunAsGroup: &runtime.Int64Value{Value: 2000}}, "65535:65535", 1000, 2000, []uint32{2000}},
		{"run_as_user looks up the group", &runtime.LinuxSandboxSecurityContext{
			RunAsUser: &runtime.Int64Value{Value: 33}}, "", 33, 33, []uint32{33}},
		{"supplemental groups", &runtime.LinuxSandboxSecurityContext{
			RunAsUser: &runtime.Int64Value{Value: 1}, RunAsGroup: &runtime.Int64Value{Value: 1},
			SupplementalGroups: []int64{5678, 1234}}, "", 1, 1, []uint32{1, 1234, 5678}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			sb.Config.Linux.SecurityContext = tc.sc
			img := pauseImage
			img.User = tc.imgUser
			s, err := sandboxSpec(t, sb, img, testRuntime)
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.groups) {
				t.Fatalf("user = %+v, want %d:%d %v", u, tc.uid, tc.gid, tc.groups)
			}
		})
	}
}

func TestSandboxOptsSeccomp(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		sc         *runtime.LinuxSandboxSecurityContext
		disabled   bool
		wantFilter string // "" none, "default", "file"
		wantErr    codes.Code
	}{
		{"none", nil, false, "", codes.OK},
		{"runtime default", &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{}}, false, "default", codes.OK},
		{"unconfined", &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}}, false, "", codes.OK},
		{"localhost", &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: profile}}, false, "file", codes.OK},
		{"privileged pod gets none", &runtime.LinuxSandboxSecurityContext{Privileged: true, Seccomp: &runtime.SecurityProfile{}}, false, "", codes.OK},
		{"deprecated runtime/default", &runtime.LinuxSandboxSecurityContext{SeccompProfilePath: "runtime/default"}, false, "default", codes.OK},
		{"deprecated localhost", &runtime.LinuxSandboxSecurityContext{SeccompProfilePath: "localhost/" + profile}, false, "file", codes.OK},
		{"deprecated garbage", &runtime.LinuxSandboxSecurityContext{SeccompProfilePath: "garbage"}, false, "", codes.InvalidArgument},
		{"seccomp disabled", &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{}}, true, "", codes.InvalidArgument},
		{"seccomp disabled but unconfined", &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}}, true, "", codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			sb.Config.Linux.SecurityContext = tc.sc
			rt := testRuntime
			rt.SeccompEnabled = !tc.disabled
			s, err := sandboxSpec(t, sb, pauseImage, rt)
			if tc.wantErr != codes.OK {
				wantCode(t, err, tc.wantErr, "config.linux.security_context.seccomp")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSeccomp(t, s, tc.wantFilter)
		})
	}
}

// checkSeccomp tells containerd's default profile (default action ERRNO)
// from the test profile (default action ALLOW).
func checkSeccomp(t *testing.T, s *specs.Spec, want string) {
	t.Helper()
	sc := s.Linux.Seccomp
	switch want {
	case "":
		if sc != nil {
			t.Fatalf("seccomp = %v, want none", sc.DefaultAction)
		}
	case "default":
		if sc == nil || sc.DefaultAction != specs.ActErrno {
			t.Fatalf("seccomp = %+v, want the runtime default", sc)
		}
	case "file":
		if sc == nil || sc.DefaultAction != specs.ActAllow || len(sc.Syscalls) != 1 {
			t.Fatalf("seccomp = %+v, want the test profile", sc)
		}
	}
}

func TestSandboxOptsErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Sandbox, *imagespec.ImageConfig)
		code codes.Code
		msg  string
	}{
		{"no config", func(sb *Sandbox, _ *imagespec.ImageConfig) { sb.Config = nil }, codes.InvalidArgument, "config is required"},
		{"image without command", func(_ *Sandbox, img *imagespec.ImageConfig) { img.Entrypoint, img.Cmd = nil, nil }, codes.InvalidArgument, "neither entrypoint nor cmd"},
		{"group without user", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{RunAsGroup: &runtime.Int64Value{Value: 1}}
		}, codes.InvalidArgument, "config.linux.security_context.run_as_group is set without run_as_user"},
		{"apparmor", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Apparmor: &runtime.SecurityProfile{}}
		}, codes.InvalidArgument, "config.linux.security_context.apparmor"},
		{"pod user namespace", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{
				UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD}}}
		}, codes.InvalidArgument, "userns_options.uids: exactly one mapping"},
		{"unmapped root", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			m := []*runtime.IDMapping{{ContainerId: 1, HostId: 1000, Length: 10}}
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{
				UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: m, Gids: m}}}
		}, codes.InvalidArgument, "uids[0].container_id must be 0"},
		{"container user namespace", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{
				UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_CONTAINER}}}
		}, codes.InvalidArgument, "userns_options.mode"},
		{"localhost ref with runtime default", func(sb *Sandbox, _ *imagespec.ImageConfig) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Seccomp: &runtime.SecurityProfile{LocalhostRef: "/x"}}
		}, codes.InvalidArgument, "config.linux.security_context.seccomp.localhost_ref must only be set with profile_type Localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			img := pauseImage
			tc.edit(&sb, &img)
			_, err := SandboxOpts(sb, img, testRuntime)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestSandboxOptsUserNamespaceNode(t *testing.T) {
	sb := testSandbox()
	sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{
		UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_NODE}}}
	s := mustSandboxSpec(t, sb)
	if _, ok := findNS(s, specs.UserNamespace); ok {
		t.Fatal("user namespace present for mode NODE")
	}
}

func TestSandboxOptsResourceAnnotations(t *testing.T) {
	sb := testSandbox()
	sb.Config.Linux.Resources = &runtime.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 1 << 20}
	s := mustSandboxSpec(t, sb)
	want := map[string]string{
		AnnotationSandboxCPUPeriod: "100000",
		AnnotationSandboxCPUQuota:  "50000",
		AnnotationSandboxCPUShares: "512",
		AnnotationSandboxMemory:    "1048576",
	}
	for k, v := range want {
		if s.Annotations[k] != v {
			t.Errorf("%s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	// The pause process itself keeps shares 2 whatever the pod asks for.
	if *s.Linux.Resources.CPU.Shares != 2 {
		t.Errorf("shares = %d", *s.Linux.Resources.CPU.Shares)
	}
}
