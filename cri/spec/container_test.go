package spec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/pkg/cap"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestProcessArgs(t *testing.T) {
	tests := []struct {
		name            string
		command, args   []string
		entrypoint, cmd []string
		want            []string
		wantErr         bool
	}{
		{"command and args", []string{"a"}, []string{"b"}, []string{"ep"}, []string{"cmd"}, []string{"a", "b"}, false},
		{"command drops the image cmd", []string{"a"}, nil, []string{"ep"}, []string{"cmd"}, []string{"a"}, false},
		{"args replace cmd", nil, []string{"b"}, []string{"ep"}, []string{"cmd"}, []string{"ep", "b"}, false},
		{"image entrypoint and cmd", nil, nil, []string{"ep"}, []string{"cmd"}, []string{"ep", "cmd"}, false},
		{"image cmd only", nil, nil, nil, []string{"sh"}, []string{"sh"}, false},
		{"empty entrypoint means none", nil, nil, []string{""}, []string{"sh"}, []string{"sh"}, false},
		{"args without any entrypoint", nil, []string{"x"}, nil, []string{"sh"}, []string{"x"}, false},
		{"nothing to run", nil, nil, nil, nil, nil, true},
		{"only an empty entrypoint", nil, nil, []string{""}, nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &runtime.ContainerConfig{Command: tc.command, Args: tc.args}
			img := imagespec.ImageConfig{Entrypoint: tc.entrypoint, Cmd: tc.cmd}
			got, err := processArgs(c, img)
			if tc.wantErr {
				wantCode(t, err, codes.InvalidArgument, "config.command")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("args = %q, want %q", got, tc.want)
			}
			// The image's slices must not be aliased.
			if len(got) > 0 && len(img.Entrypoint) > 0 && &got[0] == &img.Entrypoint[0] {
				t.Fatal("result aliases the image entrypoint")
			}
		})
	}
}

func TestContainerOptsProcess(t *testing.T) {
	c := testContainerConfig()
	c.Envs = []*runtime.KeyValue{{Key: "OVERRIDE", Value: []byte("cri")}, {Key: "EMPTY"}}
	s := mustContainerSpec(t, c, testSandbox())

	if !slices.Equal(s.Process.Args, []string{"sleep", "100"}) {
		t.Errorf("args = %q", s.Process.Args)
	}
	if s.Root.Path != "rootfs" || s.Root.Readonly {
		t.Errorf("root = %+v", s.Root)
	}
	if s.Process.Cwd != "/work" {
		t.Errorf("cwd = %q, want the image's", s.Process.Cwd)
	}
	for _, kv := range []string{"HOSTNAME=podhost", "PATH=/usr/bin:/bin", "FROM_IMAGE=1", "OVERRIDE=cri", "EMPTY="} {
		if !hasEnv(s, kv) {
			t.Errorf("env %q missing from %q", kv, s.Process.Env)
		}
	}
	if hasEnv(s, "OVERRIDE=image") || slices.Index(s.Process.Env, "FROM_IMAGE=1") > slices.Index(s.Process.Env, "OVERRIDE=cri") {
		t.Errorf("CRI env did not override the image's: %q", s.Process.Env)
	}
	if s.Process.Terminal {
		t.Error("terminal without tty")
	}
	if s.Process.NoNewPrivileges {
		t.Error("no_new_privs set by default")
	}
	if s.Process.Rlimits != nil || s.Linux.Seccomp != nil {
		t.Errorf("default rlimits or seccomp left: %v %v", s.Process.Rlimits, s.Linux.Seccomp)
	}
	if _, ok := findMount(s, "/run"); ok {
		t.Error("/run tmpfs still mounted")
	}
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 {
		t.Errorf("masked=%q readonly=%q, want none by default", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Process.OOMScoreAdj != nil {
		t.Errorf("oom_score_adj = %d without resources", *s.Process.OOMScoreAdj)
	}
	// The default capability set stays.
	if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_RAW") || !slices.Contains(s.Process.Capabilities.Effective, "CAP_CHOWN") {
		t.Errorf("default capabilities missing: %q", s.Process.Capabilities.Bounding)
	}
}

func TestContainerOptsWorkingDirTTYHostname(t *testing.T) {
	c := testContainerConfig()
	c.WorkingDir = "/srv"
	c.Tty = true
	sb := testSandbox()
	sb.Config.Hostname = ""
	old := hostname
	hostname = func() (string, error) { return "node-1", nil }
	defer func() { hostname = old }()

	s := mustContainerSpec(t, c, sb)
	if s.Process.Cwd != "/srv" {
		t.Errorf("cwd = %q", s.Process.Cwd)
	}
	if !s.Process.Terminal || !hasEnv(s, "TERM=xterm") {
		t.Errorf("terminal = %v env = %q", s.Process.Terminal, s.Process.Env)
	}
	if !hasEnv(s, "HOSTNAME=node-1") {
		t.Errorf("HOSTNAME not the node's: %q", s.Process.Env)
	}

	// Neither CRI nor image working dir: containerd's default "/".
	s, err := containerSpec(t, testContainerConfig(), testSandbox(), imagespec.ImageConfig{Cmd: []string{"sh"}}, testRuntime)
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.Cwd != "/" {
		t.Errorf("cwd = %q, want /", s.Process.Cwd)
	}

	hostname = func() (string, error) { return "", errors.New("no hostname") }
	if _, err := ContainerOpts("c", testContainerConfig(), sb, testImage, "img", testRuntime, nil); err == nil {
		t.Error("hostname error not reported")
	}
}

func TestContainerOptsAnnotations(t *testing.T) {
	c := testContainerConfig()
	c.Annotations = map[string]string{"user/annotation": "x", AnnotationSandboxID: "forged"}
	s := mustContainerSpec(t, c, testSandbox())
	want := map[string]string{
		"user/annotation":          "x",
		AnnotationContainerType:    "container",
		AnnotationSandboxID:        "sb1",
		AnnotationSandboxName:      "pod",
		AnnotationSandboxNamespace: "ns",
		AnnotationSandboxUID:       "uid-1",
		AnnotationContainerName:    "app",
		AnnotationImageName:        "docker.io/library/busybox:latest",
	}
	for k, v := range want {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
}

func TestContainerOptsCapabilities(t *testing.T) {
	all := currentCaps() // ALL is the runtime's own set
	tests := []struct {
		name     string
		caps     *runtime.Capability
		has      []string
		hasNot   []string
		exactly  []string // when set, the bounding set must equal it
		wantCode codes.Code
	}{
		{"add", &runtime.Capability{AddCapabilities: []string{"NET_ADMIN", "sys_time"}}, []string{"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_CHOWN"}, nil, nil, codes.OK},
		{"add with prefix", &runtime.Capability{AddCapabilities: []string{"CAP_SYS_ADMIN"}}, []string{"CAP_SYS_ADMIN"}, []string{"CAP_CAP_SYS_ADMIN"}, nil, codes.OK},
		{"drop", &runtime.Capability{DropCapabilities: []string{"NET_RAW"}}, []string{"CAP_CHOWN"}, []string{"CAP_NET_RAW"}, nil, codes.OK},
		{"add all", &runtime.Capability{AddCapabilities: []string{"ALL"}}, nil, nil, all, codes.OK},
		{"add all then drop one", &runtime.Capability{AddCapabilities: []string{"all"}, DropCapabilities: []string{"CHOWN"}}, []string{"CAP_SYS_ADMIN"}, []string{"CAP_CHOWN"}, nil, codes.OK},
		{"drop all", &runtime.Capability{DropCapabilities: []string{"ALL"}}, nil, nil, []string{}, codes.OK},
		{"drop all then add one", &runtime.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}}, nil, nil, []string{"CAP_NET_BIND_SERVICE"}, codes.OK},
		{"ambient", &runtime.Capability{AddAmbientCapabilities: []string{"NET_RAW"}}, nil, nil, nil, codes.Unimplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{Capabilities: tc.caps}}
			s, err := containerSpec(t, c, testSandbox(), testImage, testRuntime)
			if tc.wantCode != codes.OK {
				wantCode(t, err, tc.wantCode, "add_ambient_capabilities")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pc := s.Process.Capabilities
			for _, set := range [][]string{pc.Bounding, pc.Effective, pc.Permitted} {
				for _, h := range tc.has {
					if !slices.Contains(set, h) {
						t.Errorf("%s missing from %q", h, set)
					}
				}
				for _, h := range tc.hasNot {
					if slices.Contains(set, h) {
						t.Errorf("%s present in %q", h, set)
					}
				}
				if tc.exactly != nil {
					got := slices.Clone(set)
					want := slices.Clone(tc.exactly)
					slices.Sort(got)
					slices.Sort(want)
					if !slices.Equal(got, want) {
						t.Errorf("caps = %q, want %q", got, want)
					}
				}
			}
			if len(pc.Ambient) != 0 {
				t.Errorf("ambient = %q", pc.Ambient)
			}
		})
	}
}

func TestContainerOptsPrivileged(t *testing.T) {
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
		Privileged:    true,
		MaskedPaths:   []string{"/proc/kcore"},
		ReadonlyPaths: []string{"/proc/sys"},
		Seccomp:       &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault},
	}}

	_, err := ContainerOpts("c", c, testSandbox(), testImage, "img", testRuntime, nil)
	wantCode(t, err, codes.InvalidArgument, "no privileged container allowed in sandbox")

	sb := testSandbox()
	sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Privileged: true}
	s := mustContainerSpec(t, c, sb)
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("masked=%q readonly=%q, want none for privileged", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Error("seccomp set for a privileged container")
	}
	if len(s.Linux.Devices) == 0 {
		t.Error("host devices missing")
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow || d[0].Access != "rwm" {
		t.Errorf("device cgroup = %+v, want allow all", d)
	}
	current, err := cap.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Capabilities.Bounding, current) {
		t.Errorf("caps = %q, want all current %q", s.Process.Capabilities.Bounding, current)
	}
	if m, _ := findMount(s, "/sys"); slices.Contains(m.Options, "ro") {
		t.Errorf("/sys read-only for a privileged container: %q", m.Options)
	}
	if m, _ := findMount(s, "/sys/fs/cgroup"); slices.Contains(m.Options, "ro") {
		t.Errorf("cgroupfs read-only for a privileged container: %q", m.Options)
	}
}

func TestContainerOptsMaskedAndReadonlyPaths(t *testing.T) {
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
		MaskedPaths:   []string{"/bin/ls"},
		ReadonlyPaths: []string{"/tmp"},
	}}
	s := mustContainerSpec(t, c, testSandbox())
	if !slices.Equal(s.Linux.MaskedPaths, []string{"/bin/ls"}) || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/tmp"}) {
		t.Fatalf("masked=%q readonly=%q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
}

func TestContainerOptsNoNewPrivsAndReadonlyRootfs(t *testing.T) {
	for _, on := range []bool{false, true} {
		c := testContainerConfig()
		c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{NoNewPrivs: on, ReadonlyRootfs: on}}
		s := mustContainerSpec(t, c, testSandbox())
		if s.Process.NoNewPrivileges != on || s.Root.Readonly != on {
			t.Errorf("on=%v: no_new_privs=%v readonly=%v", on, s.Process.NoNewPrivileges, s.Root.Readonly)
		}
	}
}

func TestContainerOptsCgroupNamespace(t *testing.T) {
	tests := []struct {
		name       string
		unified    bool
		privileged bool
		want       bool
	}{
		{"cgroup v1", false, false, false},
		{"cgroup v2", true, false, true},
		{"cgroup v2 privileged", true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setHost(t, hostFacts{unifiedCgroups: tc.unified})
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{Privileged: tc.privileged}}
			sb := testSandbox()
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Privileged: true}
			rt := testRuntime
			rt.LookupMount = fakeMounts(nil)
			s, err := containerSpec(t, c, sb, testImage, rt)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := findNS(s, specs.CgroupNamespace); ok != tc.want {
				t.Fatalf("cgroup namespace = %v, want %v", ok, tc.want)
			}
		})
	}
}

func TestContainerOptsResources(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name string
		host hostFacts
		res  *runtime.LinuxContainerResources
		want specs.LinuxResources
		oom  int
	}{
		{"cpu", defaultHost, &runtime.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 256, CpusetCpus: "0-1", CpusetMems: "0"},
			specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(100000), Quota: i64(20000), Shares: u64(256), Cpus: "0-1", Mems: "0"}, Memory: &specs.LinuxMemory{}}, 0},
		{"memory limit sets swap to the limit", defaultHost, &runtime.LinuxContainerResources{MemoryLimitInBytes: 1 << 20},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{Limit: i64(1 << 20), Swap: i64(1 << 20)}}, 0},
		{"explicit swap", defaultHost, &runtime.LinuxContainerResources{MemoryLimitInBytes: 1 << 20, MemorySwapLimitInBytes: 2 << 20},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{Limit: i64(1 << 20), Swap: i64(2 << 20)}}, 0},
		{"no swap accounting", hostFacts{}, &runtime.LinuxContainerResources{MemoryLimitInBytes: 1 << 20, MemorySwapLimitInBytes: 2 << 20},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{Limit: i64(1 << 20)}}, 0},
		{"hugepages with the controller", hostFacts{hugetlb: true}, &runtime.LinuxContainerResources{HugepageLimits: []*runtime.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}}},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}, HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}}, 0},
		{"hugepages without the controller are dropped", hostFacts{}, &runtime.LinuxContainerResources{HugepageLimits: []*runtime.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}}},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}}, 0},
		{"unified", defaultHost, &runtime.LinuxContainerResources{Unified: map[string]string{"memory.high": "1000000"}},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}, Unified: map[string]string{"memory.high": "1000000"}}, 0},
		{"oom score", defaultHost, &runtime.LinuxContainerResources{OomScoreAdj: 999},
			specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}}, 999},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setHost(t, tc.host)
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{Resources: tc.res}
			s := mustContainerSpec(t, c, testSandbox())
			got := s.Linux.Resources
			if !equalJSON(t, got.CPU, tc.want.CPU) || !equalJSON(t, got.Memory, tc.want.Memory) ||
				!equalJSON(t, got.HugepageLimits, tc.want.HugepageLimits) || !equalJSON(t, got.Unified, tc.want.Unified) {
				t.Fatalf("resources = %s, want %s", toJSON(t, got), toJSON(t, &tc.want))
			}
			if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != tc.oom {
				t.Fatalf("oom_score_adj = %v, want %d", s.Process.OOMScoreAdj, tc.oom)
			}
		})
	}
}

func TestWithResourcesNil(t *testing.T) {
	s := &specs.Spec{}
	if err := WithResources(nil)(testCtx(), nil, nil, s); err != nil || s.Linux != nil {
		t.Fatalf("nil resources changed the spec: %+v, %v", s.Linux, err)
	}
}

func TestContainerOptsCgroupsPath(t *testing.T) {
	s := mustContainerSpec(t, testContainerConfig(), testSandbox())
	if s.Linux.CgroupsPath != "/kubepods/pod-uid-1/ctr1" {
		t.Fatalf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}
	rt := testRuntime
	rt.CgroupDriver = CgroupDriverSystemd
	sb := testSandbox()
	sb.Config.Linux.CgroupParent = "/kubepods.slice/kubepods-pod1.slice"
	s, err := containerSpec(t, testContainerConfig(), sb, testImage, rt)
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.CgroupsPath != "kubepods-pod1.slice:cri-containerd:ctr1" {
		t.Fatalf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}
}

func TestContainerOptsNamespaces(t *testing.T) {
	type nsWant map[specs.LinuxNamespaceType]string // path; "-" means absent, "" means new
	tests := []struct {
		name      string
		sbNS      *runtime.NamespaceOption
		ctrNS     *runtime.NamespaceOption
		pid       uint32
		targetPid func(string) (uint32, error)
		want      nsWant
		code      codes.Code
		msg       string
	}{
		{"pod defaults", nil, nil, 4242, nil, nsWant{
			specs.NetworkNamespace: "/proc/4242/ns/net", specs.IPCNamespace: "/proc/4242/ns/ipc",
			specs.UTSNamespace: "/proc/4242/ns/uts", specs.PIDNamespace: "/proc/4242/ns/pid", specs.MountNamespace: ""}, codes.OK, ""},
		{"own pid namespace", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}, 4242, nil,
			nsWant{specs.PIDNamespace: "", specs.NetworkNamespace: "/proc/4242/ns/net"}, codes.OK, ""},
		{"target pid namespace", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "other"}, 4242,
			func(id string) (uint32, error) {
				if id != "other" {
					return 0, errors.New("wrong id")
				}
				return 777, nil
			}, nsWant{specs.PIDNamespace: "/proc/777/ns/pid"}, codes.OK, ""},
		{"host pid", &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, 4242, nil,
			nsWant{specs.PIDNamespace: "-", specs.IPCNamespace: "/proc/4242/ns/ipc"}, codes.OK, ""},
		{"host network", &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE}, &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE}, 4242, nil,
			nsWant{specs.NetworkNamespace: "-", specs.UTSNamespace: "-", specs.IPCNamespace: "/proc/4242/ns/ipc"}, codes.OK, ""},
		{"host ipc", &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}, nil, 4242, nil,
			nsWant{specs.IPCNamespace: "-", specs.NetworkNamespace: "/proc/4242/ns/net"}, codes.OK, ""},
		{"all host namespaces need no pause pid", &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE, Ipc: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_NODE},
			&runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, 0, nil,
			nsWant{specs.NetworkNamespace: "-", specs.IPCNamespace: "-", specs.PIDNamespace: "-", specs.UTSNamespace: "-"}, codes.OK, ""},
		{"missing pause pid", nil, nil, 0, nil, nil, codes.InvalidArgument, "no running pause process"},
		{"host pid outside a host-pid pod", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, 4242, nil, nil, codes.InvalidArgument,
			"config.linux.security_context.namespace_options.pid is NODE but the sandbox does not use the host PID namespace"},
		{"target without id", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET}, 4242, nil, nil, codes.InvalidArgument,
			"config.linux.security_context.namespace_options.target_id is required"},
		{"target without resolver", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "x"}, 4242, nil, nil, codes.InvalidArgument, "target_id \"x\""},
		{"target lookup fails", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "x"}, 4242,
			func(string) (uint32, error) { return 0, errors.New("not found") }, nil, codes.InvalidArgument, "not found"},
		{"target not running", nil, &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "x"}, 4242,
			func(string) (uint32, error) { return 0, nil }, nil, codes.InvalidArgument, "is not running"},
		{"unknown pid mode", nil, &runtime.NamespaceOption{Pid: 9}, 4242, nil, nil, codes.InvalidArgument, "namespace_options.pid"},
		{"pod user namespace without mappings", &runtime.NamespaceOption{UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD}}, nil, 4242, nil, nil,
			codes.InvalidArgument, "exactly one mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := testSandbox()
			sb.Pid = tc.pid
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: tc.sbNS}
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{NamespaceOptions: tc.ctrNS}}
			opts, err := ContainerOpts("ctr1", c, sb, testImage, "img", testRuntime, tc.targetPid)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err := generate(WithRootfsDir(testCtx(), testRootfs(t)), "ctr1", opts)
			if err != nil {
				t.Fatal(err)
			}
			for typ, path := range tc.want {
				ns, ok := findNS(s, typ)
				switch {
				case path == "-" && ok:
					t.Errorf("%s namespace present: %+v", typ, ns)
				case path != "-" && !ok:
					t.Errorf("%s namespace missing", typ)
				case path != "-" && ns.Path != path:
					t.Errorf("%s namespace path = %q, want %q", typ, ns.Path, path)
				}
			}
		})
	}
}

func TestContainerOptsUser(t *testing.T) {
	i := func(v int64) *runtime.Int64Value { return &runtime.Int64Value{Value: v} }
	tests := []struct {
		name     string
		sc       *runtime.LinuxContainerSecurityContext
		imgUser  string
		uid, gid uint32
		groups   []uint32
		code     codes.Code
		msg      string
	}{
		{"root by default, groups from /etc/group", nil, "", 0, 0, []uint32{0, 10}, codes.OK, ""},
		{"image uid", nil, "1000", 1000, 1000, []uint32{1000, 50000}, codes.OK, ""},
		{"image name", nil, "www-data", 33, 33, []uint32{33}, codes.OK, ""},
		{"image name and gid", nil, "www-data:1004", 33, 1004, []uint32{1004}, codes.OK, ""},
		{"image uid not in passwd", nil, "1002", 1002, 0, []uint32{0}, codes.OK, ""},
		{"run_as_user", &runtime.LinuxContainerSecurityContext{RunAsUser: i(1000)}, "www-data", 1000, 1000, []uint32{1000, 50000}, codes.OK, ""},
		{"run_as_user and run_as_group", &runtime.LinuxContainerSecurityContext{RunAsUser: i(1000), RunAsGroup: i(2000)}, "", 1000, 2000, []uint32{2000, 50000}, codes.OK, ""},
		{"run_as_username", &runtime.LinuxContainerSecurityContext{RunAsUsername: "www-data"}, "1000", 33, 33, []uint32{33}, codes.OK, ""},
		{"run_as_username wins over run_as_user", &runtime.LinuxContainerSecurityContext{RunAsUsername: "nobody", RunAsUser: i(1000)}, "", 65534, 65534, []uint32{65534}, codes.OK, ""},
		{"merge policy (critest)", &runtime.LinuxContainerSecurityContext{RunAsUser: i(1000), SupplementalGroups: []int64{1234}}, "1000",
			1000, 1000, []uint32{1000, 1234, 50000}, codes.OK, ""},
		{"strict policy (critest)", &runtime.LinuxContainerSecurityContext{RunAsUser: i(1000), SupplementalGroups: []int64{1234},
			SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict}, "1000", 1000, 1000, []uint32{1000, 1234}, codes.OK, ""},
		{"supplemental groups", &runtime.LinuxContainerSecurityContext{SupplementalGroups: []int64{5678, 1234}}, "", 0, 0, []uint32{0, 10, 1234, 5678}, codes.OK, ""},
		{"group without user", &runtime.LinuxContainerSecurityContext{RunAsGroup: i(1002)}, "", 0, 0, nil, codes.InvalidArgument,
			"config.linux.security_context.run_as_group is set without run_as_user or run_as_username"},
		{"unknown policy", &runtime.LinuxContainerSecurityContext{SupplementalGroupsPolicy: 7}, "", 0, 0, nil, codes.InvalidArgument,
			"config.linux.security_context.supplemental_groups_policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: tc.sc}
			img := testImage
			img.User = tc.imgUser
			s, err := containerSpec(t, c, testSandbox(), img, testRuntime)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.groups) {
				t.Fatalf("user = %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, tc.uid, tc.gid, tc.groups)
			}
			cu := UserFromSpec(s).GetLinux()
			if cu.GetUid() != int64(tc.uid) || cu.GetGid() != int64(tc.gid) || len(cu.GetSupplementalGroups()) != len(tc.groups) {
				t.Fatalf("UserFromSpec = %+v", cu)
			}
		})
	}
}

func TestContainerOptsUnknownUserFailsWhenApplied(t *testing.T) {
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{RunAsUsername: "ghost"}}
	if _, err := containerSpec(t, c, testSandbox(), testImage, testRuntime); err == nil {
		t.Fatal("unknown user accepted")
	}
}

func TestContainerOptsUserWithoutRootfsNeedsSnapshot(t *testing.T) {
	// Without WithRootfsDir and without a snapshot, containerd cannot read
	// /etc/passwd; this is why the server must use WithNewSnapshot first.
	opts, err := ContainerOpts("c", testContainerConfig(), testSandbox(), testImage, "img", testRuntime, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generate(testCtx(), "c", opts); err == nil {
		t.Fatal("user lookup without rootfs succeeded")
	}
	// Numeric uid:gid with Strict policy needs no lookup at all.
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
		RunAsUser: &runtime.Int64Value{Value: 5}, RunAsGroup: &runtime.Int64Value{Value: 6},
		SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict}}
	opts, err = ContainerOpts("c", c, testSandbox(), testImage, "img", testRuntime, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := generate(testCtx(), "c", opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.User.UID != 5 || s.Process.User.GID != 6 || s.Root.Path != "rootfs" {
		t.Fatalf("user = %+v root = %q", s.Process.User, s.Root.Path)
	}
}

func TestContainerOptsSeccomp(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "block.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sp := func(typ runtime.SecurityProfile_ProfileType, ref string) *runtime.SecurityProfile {
		return &runtime.SecurityProfile{ProfileType: typ, LocalhostRef: ref}
	}
	tests := []struct {
		name string
		sc   *runtime.LinuxContainerSecurityContext
		want string
		code codes.Code
		msg  string
	}{
		{"nil is unconfined", nil, "", codes.OK, ""},
		{"runtime default", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_RuntimeDefault, "")}, "default", codes.OK, ""},
		{"unconfined", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Unconfined, "")}, "", codes.OK, ""},
		{"localhost", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Localhost, profile)}, "file", codes.OK, ""},
		{"localhost with prefix", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Localhost, "localhost/"+profile)}, "file", codes.OK, ""},
		{"structured field wins", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Unconfined, ""), SeccompProfilePath: "runtime/default"}, "", codes.OK, ""},
		{"deprecated runtime/default", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "runtime/default"}, "default", codes.OK, ""},
		{"deprecated docker/default", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "docker/default"}, "default", codes.OK, ""},
		{"deprecated unconfined", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "unconfined"}, "", codes.OK, ""},
		{"deprecated localhost", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/" + profile}, "file", codes.OK, ""},
		{"deprecated bogus", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "bogus"}, "", codes.InvalidArgument,
			"config.linux.security_context.seccomp_profile_path: invalid profile \"bogus\""},
		{"deprecated empty localhost", &runtime.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/"}, "", codes.InvalidArgument, "seccomp_profile_path"},
		{"localhost without ref", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Localhost, "")}, "", codes.InvalidArgument,
			"config.linux.security_context.seccomp.localhost_ref is required"},
		{"ref with wrong type", &runtime.LinuxContainerSecurityContext{Seccomp: sp(runtime.SecurityProfile_Unconfined, "/x")}, "", codes.InvalidArgument,
			"config.linux.security_context.seccomp.localhost_ref must only be set"},
		{"unknown type", &runtime.LinuxContainerSecurityContext{Seccomp: sp(9, "")}, "", codes.InvalidArgument, "config.linux.security_context.seccomp.profile_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: tc.sc}
			s, err := containerSpec(t, c, testSandbox(), testImage, testRuntime)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSeccomp(t, s, tc.want)
		})
	}
}

func TestContainerOptsDefaultSeccompFollowsCapabilities(t *testing.T) {
	// containerd's default profile allows more syscalls with CAP_SYS_ADMIN;
	// it must see the final capability set.
	names := func(caps []string) int {
		c := testContainerConfig()
		c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
			Seccomp:      &runtime.SecurityProfile{},
			Capabilities: &runtime.Capability{AddCapabilities: caps},
		}}
		s := mustContainerSpec(t, c, testSandbox())
		n := 0
		for _, sc := range s.Linux.Seccomp.Syscalls {
			if sc.Action == specs.ActAllow {
				n += len(sc.Names)
			}
		}
		return n
	}
	if plain, admin := names(nil), names([]string{"SYS_ADMIN"}); admin <= plain {
		t.Fatalf("allowed syscalls with SYS_ADMIN = %d, without = %d", admin, plain)
	}
}

func TestContainerOptsAppArmor(t *testing.T) {
	tests := []struct {
		name string
		sc   *runtime.LinuxContainerSecurityContext
		code codes.Code
		msg  string
	}{
		{"none", nil, codes.OK, ""},
		{"unconfined", &runtime.LinuxContainerSecurityContext{Apparmor: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}}, codes.OK, ""},
		{"deprecated unconfined", &runtime.LinuxContainerSecurityContext{ApparmorProfile: "unconfined"}, codes.OK, ""},
		{"runtime default", &runtime.LinuxContainerSecurityContext{Apparmor: &runtime.SecurityProfile{}}, codes.InvalidArgument,
			"config.linux.security_context.apparmor: AppArmor is not supported"},
		{"localhost", &runtime.LinuxContainerSecurityContext{Apparmor: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p"}},
			codes.InvalidArgument, "AppArmor is not supported"},
		{"deprecated localhost", &runtime.LinuxContainerSecurityContext{ApparmorProfile: "localhost/p"}, codes.InvalidArgument, "AppArmor is not supported"},
		{"deprecated bogus", &runtime.LinuxContainerSecurityContext{ApparmorProfile: "bogus"}, codes.InvalidArgument,
			"config.linux.security_context.apparmor_profile: invalid profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: tc.sc}
			_, err := ContainerOpts("c", c, testSandbox(), testImage, "img", testRuntime, nil)
			if tc.code == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestContainerOptsRequiredInputs(t *testing.T) {
	_, err := ContainerOpts("c", nil, testSandbox(), testImage, "img", testRuntime, nil)
	wantCode(t, err, codes.InvalidArgument, "config is required")
	sb := testSandbox()
	sb.Config = nil
	_, err = ContainerOpts("c", testContainerConfig(), sb, testImage, "img", testRuntime, nil)
	wantCode(t, err, codes.InvalidArgument, "sandbox_config is required")
	c := testContainerConfig()
	c.CDIDevices = []*runtime.CDIDevice{{Name: "vendor.com/gpu=0"}}
	_, err = ContainerOpts("c", c, testSandbox(), testImage, "img", testRuntime, nil)
	wantCode(t, err, codes.Unimplemented, "config.CDI_devices")
	c = testContainerConfig()
	c.Command = nil
	_, err = ContainerOpts("c", c, testSandbox(), imagespec.ImageConfig{}, "img", testRuntime, nil)
	wantCode(t, err, codes.InvalidArgument, "config.command")
}

func TestUserFromSpec(t *testing.T) {
	if u := UserFromSpec(nil); u.GetLinux() != nil {
		t.Fatalf("nil spec: %+v", u)
	}
	if u := UserFromSpec(&specs.Spec{}); u.GetLinux() != nil {
		t.Fatalf("no process: %+v", u)
	}
	s := &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50000, 1000, 1234}}}}
	u := UserFromSpec(s).GetLinux()
	if u.GetUid() != 1000 || u.GetGid() != 1000 || !slices.Equal(u.GetSupplementalGroups(), []int64{1000, 1234, 50000}) {
		t.Fatalf("user = %+v", u)
	}
}

func TestCgroupsPath(t *testing.T) {
	tests := []struct {
		parent, id, driver, want string
	}{
		{"/kubepods/burstable/pod1", "c1", CgroupDriverCgroupfs, "/kubepods/burstable/pod1/c1"},
		{"/kubepods/burstable/pod1/", "c1", CgroupDriverCgroupfs, "/kubepods/burstable/pod1/c1"},
		{"", "c1", CgroupDriverCgroupfs, ""},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice", "c1", CgroupDriverSystemd, "kubepods-burstable-pod1.slice:cri-containerd:c1"},
		{"kubepods-pod1.slice", "c1", CgroupDriverSystemd, "kubepods-pod1.slice:cri-containerd:c1"},
		{"/test.slice", "c1", CgroupDriverSystemd, "test.slice:cri-containerd:c1"},
		{"", "c1", CgroupDriverSystemd, ":cri-containerd:c1"},
		{"/kubepods.slice/x.slice", "c1", "", "x.slice:cri-containerd:c1"},
		{"/kubepods/x", "c1", "", "/kubepods/x/c1"},
		// The driver wins over the name: cgroupfs with a ".slice" parent
		// is a plain directory.
		{"/test.slice", "c1", CgroupDriverCgroupfs, "/test.slice/c1"},
	}
	for _, tc := range tests {
		if got := CgroupsPath(tc.parent, tc.id, tc.driver); got != tc.want {
			t.Errorf("CgroupsPath(%q, %q, %q) = %q, want %q", tc.parent, tc.id, tc.driver, got, tc.want)
		}
	}
}
