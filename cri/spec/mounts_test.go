package spec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// realDir returns t.TempDir() with symlinks resolved (TMPDIR may be one).
func realDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestContainerMountsPropagationAndReadonly(t *testing.T) {
	dir := realDir(t)
	shared := filepath.Join(dir, "shared")
	slave := filepath.Join(dir, "slave")
	private := filepath.Join(dir, "private")
	for _, d := range []string{shared, slave, private} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lookup := fakeMounts(map[string]string{"/": "", shared: "shared:7", slave: "master:3", private: ""})
	const (
		priv = runtime.MountPropagation_PROPAGATION_PRIVATE
		h2c  = runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		bidi = runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL
	)
	tests := []struct {
		name     string
		mounts   []*runtime.Mount
		rro      bool // runtime supports RRO
		wantOpts [][]string
		rootProp string
		code     codes.Code
		msg      string
	}{
		{"private rw", []*runtime.Mount{{HostPath: private, ContainerPath: "/data"}}, false,
			[][]string{{"rbind", "rprivate", "rw"}}, "", codes.OK, ""},
		{"private ro", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", Readonly: true}}, false,
			[][]string{{"rbind", "rprivate", "ro"}}, "", codes.OK, ""},
		{"recursive read-only", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true}}, true,
			[][]string{{"rbind", "rprivate", "rro"}}, "", codes.OK, ""},
		{"rro unsupported", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true}}, false,
			nil, "", codes.InvalidArgument, "RROUnsupported: config.mounts[0].recursive_read_only"},
		{"rro needs readonly", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", RecursiveReadOnly: true}}, true,
			nil, "", codes.InvalidArgument, "config.mounts[0].recursive_read_only requires readonly"},
		{"rro needs private (host to container)", []*runtime.Mount{{HostPath: shared, ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true, Propagation: h2c}}, true,
			nil, "", codes.InvalidArgument, "config.mounts[0].recursive_read_only requires propagation PROPAGATION_PRIVATE"},
		{"rro needs private (bidirectional)", []*runtime.Mount{{HostPath: shared, ContainerPath: "/data", Readonly: true, RecursiveReadOnly: true, Propagation: bidi}}, true,
			nil, "", codes.InvalidArgument, "requires propagation PROPAGATION_PRIVATE"},
		{"host to container on shared", []*runtime.Mount{{HostPath: shared, ContainerPath: "/data", Propagation: h2c}}, false,
			[][]string{{"rbind", "rslave", "rw"}}, "rslave", codes.OK, ""},
		{"host to container on slave", []*runtime.Mount{{HostPath: slave, ContainerPath: "/data", Propagation: h2c}}, false,
			[][]string{{"rbind", "rslave", "rw"}}, "rslave", codes.OK, ""},
		{"host to container on private", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", Propagation: h2c}}, false,
			nil, "", codes.FailedPrecondition, "path \"" + private + "\" is mounted on \"" + private + "\" but it is not a shared or slave mount"},
		{"bidirectional on shared", []*runtime.Mount{{HostPath: shared, ContainerPath: "/data", Propagation: bidi}}, false,
			[][]string{{"rbind", "rshared", "rw"}}, "rshared", codes.OK, ""},
		{"bidirectional on slave", []*runtime.Mount{{HostPath: slave, ContainerPath: "/data", Propagation: bidi}}, false,
			nil, "", codes.FailedPrecondition, "path \"" + slave + "\" is mounted on \"" + slave + "\" but it is not a shared mount"},
		{"bidirectional then host to container keeps rshared", []*runtime.Mount{
			{HostPath: shared, ContainerPath: "/a", Propagation: bidi},
			{HostPath: slave, ContainerPath: "/b", Propagation: h2c}}, false,
			[][]string{{"rbind", "rshared", "rw"}, {"rbind", "rslave", "rw"}}, "rshared", codes.OK, ""},
		{"host to container then bidirectional", []*runtime.Mount{
			{HostPath: slave, ContainerPath: "/b", Propagation: h2c},
			{HostPath: shared, ContainerPath: "/a", Propagation: bidi}}, false,
			[][]string{{"rbind", "rslave", "rw"}, {"rbind", "rshared", "rw"}}, "rshared", codes.OK, ""},
		{"unknown propagation", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", Propagation: 5}}, false,
			nil, "", codes.InvalidArgument, "config.mounts[0].propagation"},
		{"image volume", []*runtime.Mount{{ContainerPath: "/data", Image: &runtime.ImageSpec{Image: "busybox"}}}, false,
			nil, "", codes.Unimplemented, "config.mounts[0].image"},
		{"idmapped", []*runtime.Mount{{HostPath: private, ContainerPath: "/data", UidMappings: []*runtime.IDMapping{{HostId: 1, Length: 1}}}}, false,
			nil, "", codes.Unimplemented, "config.mounts[0]: idmapped mounts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			c.Mounts = tc.mounts
			rt := testRuntime
			rt.RROSupported = tc.rro
			rt.LookupMount = lookup
			s, err := containerSpec(t, c, testSandbox(), testImage, rt)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range tc.mounts {
				got, ok := findMount(s, m.ContainerPath)
				if !ok {
					t.Fatalf("mount %s missing", m.ContainerPath)
				}
				if got.Type != "bind" || got.Source != m.HostPath || !slices.Equal(got.Options, tc.wantOpts[i]) {
					t.Errorf("mount %s = %+v, want options %q", m.ContainerPath, got, tc.wantOpts[i])
				}
			}
			if s.Linux.RootfsPropagation != tc.rootProp {
				t.Errorf("rootfsPropagation = %q, want %q", s.Linux.RootfsPropagation, tc.rootProp)
			}
		})
	}
}

func TestContainerMountsHostPath(t *testing.T) {
	dir := realDir(t)
	missing := filepath.Join(dir, "new", "nested")
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := testContainerConfig()
	c.Mounts = []*runtime.Mount{
		{HostPath: missing, ContainerPath: "/missing"},
		{HostPath: link, ContainerPath: "/link"},
		{HostPath: file, ContainerPath: "/etc/config"},
	}
	s := mustContainerSpec(t, c, testSandbox())
	if st, err := os.Stat(missing); err != nil || !st.IsDir() {
		t.Errorf("missing host path not created as a directory: %v", err)
	}
	if m, _ := findMount(s, "/link"); m.Source != target {
		t.Errorf("symlink not resolved: %q", m.Source)
	}
	if m, _ := findMount(s, "/etc/config"); m.Source != file {
		t.Errorf("file mount = %q", m.Source)
	}
}

func TestContainerMountsSandboxFiles(t *testing.T) {
	dir := realDir(t)
	files := map[string]string{}
	for _, n := range []string{"hostname", "hosts", "resolv.conf", "shm"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		files[n] = p
	}
	sandbox := func() Sandbox {
		sb := testSandbox()
		sb.HostnamePath, sb.HostsPath, sb.ResolvPath, sb.ShmPath = files["hostname"], files["hosts"], files["resolv.conf"], files["shm"]
		return sb
	}
	own := filepath.Join(dir, "own-hosts")
	if err := os.WriteFile(own, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		edit   func(*runtime.ContainerConfig, *Sandbox)
		want   map[string]string // destination -> source
		wantRO map[string]bool
		absent []string
	}{
		{"all files", func(*runtime.ContainerConfig, *Sandbox) {}, map[string]string{
			"/etc/hostname": files["hostname"], "/etc/hosts": files["hosts"], "/etc/resolv.conf": files["resolv.conf"], "/dev/shm": files["shm"]},
			map[string]bool{"/etc/hostname": false, "/etc/hosts": false, "/etc/resolv.conf": false, "/dev/shm": false}, nil},
		{"read-only rootfs makes the files read-only", func(c *runtime.ContainerConfig, _ *Sandbox) {
			c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{ReadonlyRootfs: true}}
		}, map[string]string{"/etc/hosts": files["hosts"]},
			map[string]bool{"/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true, "/dev/shm": false}, nil},
		{"CRI mount wins", func(c *runtime.ContainerConfig, _ *Sandbox) {
			c.Mounts = []*runtime.Mount{{HostPath: own, ContainerPath: "/etc/hosts/"}}
		}, map[string]string{"/etc/hosts/": own, "/etc/hostname": files["hostname"]}, nil, []string{"/etc/hosts"}},
		{"absent files are skipped", func(_ *runtime.ContainerConfig, sb *Sandbox) {
			sb.HostnamePath, sb.HostsPath = "", ""
			sb.ResolvPath = filepath.Join(dir, "does-not-exist")
		}, map[string]string{"/dev/shm": files["shm"]}, nil, []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}},
		{"host IPC gets the host's /dev/shm", func(_ *runtime.ContainerConfig, sb *Sandbox) {
			sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}}
		}, map[string]string{"/dev/shm": "/dev/shm"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainerConfig()
			sb := sandbox()
			tc.edit(c, &sb)
			s := mustContainerSpec(t, c, sb)
			for dst, src := range tc.want {
				m, ok := findMount(s, dst)
				if !ok || m.Source != src || m.Type != "bind" {
					t.Errorf("%s = %+v, want bind of %s", dst, m, src)
				}
				if n := countMounts(s, strings.TrimSuffix(dst, "/")) + countMounts(s, dst); dst != strings.TrimSuffix(dst, "/") && n != 1 {
					t.Errorf("%s mounted %d times", dst, n)
				}
			}
			for dst, ro := range tc.wantRO {
				m, _ := findMount(s, dst)
				if slices.Contains(m.Options, "ro") != ro || slices.Contains(m.Options, "rw") == ro {
					t.Errorf("%s options %q, read-only want %v", dst, m.Options, ro)
				}
			}
			for _, dst := range tc.absent {
				if _, ok := findMount(s, dst); ok {
					t.Errorf("%s mounted", dst)
				}
			}
			if n := countMounts(s, "/dev/shm"); n != 1 {
				t.Errorf("/dev/shm mounted %d times", n)
			}
		})
	}
}

func TestContainerMountsOrderAndDefaults(t *testing.T) {
	dir := realDir(t)
	c := testContainerConfig()
	c.Mounts = []*runtime.Mount{
		{HostPath: filepath.Join(dir, "c"), ContainerPath: "/a/b/c"},
		{HostPath: filepath.Join(dir, "a"), ContainerPath: "/a"},
		{HostPath: filepath.Join(dir, "b"), ContainerPath: "/a/b"},
		{HostPath: filepath.Join(dir, "x"), ContainerPath: "/x"},
	}
	s := mustContainerSpec(t, c, testSandbox())
	var order []string
	for _, m := range s.Mounts {
		if m.Type == "bind" {
			order = append(order, m.Destination)
		}
	}
	if want := []string{"/a", "/x", "/a/b", "/a/b/c"}; !slices.Equal(order, want) {
		t.Errorf("bind order = %q, want %q (by depth, stable)", order, want)
	}
	cg, ok := findMount(s, "/sys/fs/cgroup")
	if !ok || cg.Type != "cgroup" || !slices.Equal(cg.Options, []string{"nosuid", "noexec", "nodev", "relatime", "ro"}) {
		t.Errorf("cgroup mount = %+v", cg)
	}
	// Default mounts stay: /proc, /dev, /dev/pts, /dev/mqueue, /sys.
	for _, d := range []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys"} {
		if _, ok := findMount(s, d); !ok {
			t.Errorf("default mount %s missing", d)
		}
	}

	// A CRI mount on /dev replaces every default mount under /dev, and one
	// on /sys/fs/cgroup replaces the cgroupfs mount.
	c.Mounts = []*runtime.Mount{
		{HostPath: filepath.Join(dir, "dev"), ContainerPath: "/dev"},
		{HostPath: filepath.Join(dir, "cg"), ContainerPath: "/sys/fs/cgroup"},
	}
	s = mustContainerSpec(t, c, testSandbox())
	for _, m := range s.Mounts {
		if (strings.HasPrefix(m.Destination, "/dev") && m.Source != filepath.Join(dir, "dev")) ||
			(m.Destination == "/sys/fs/cgroup" && m.Type != "bind") {
			t.Errorf("default mount %+v not replaced", m)
		}
	}
	if _, ok := findMount(s, "/dev"); !ok {
		t.Error("/dev bind missing")
	}
}

func TestCgroupMountKeepsHostOptionsOnCgroupV2(t *testing.T) {
	setHost(t, hostFacts{unifiedCgroups: true})
	rt := testRuntime
	rt.LookupMount = func(p string) (m mountInfo, err error) {
		m.Mountpoint = "/sys/fs/cgroup"
		m.VFSOptions = "rw,nsdelegate,memory_recursiveprot"
		return m, nil
	}
	c := testContainerConfig()
	c.Linux = &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{Privileged: true}}
	sb := testSandbox()
	sb.Config.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{Privileged: true}
	s, err := containerSpec(t, c, sb, testImage, rt)
	if err != nil {
		t.Fatal(err)
	}
	cg, _ := findMount(s, "/sys/fs/cgroup")
	if !slices.Contains(cg.Options, "nsdelegate") || !slices.Contains(cg.Options, "memory_recursiveprot") {
		t.Errorf("cgroup options %q lack the host's nsdelegate/memory_recursiveprot", cg.Options)
	}
	// With a cgroup namespace the mount is the container's own.
	c.Linux.SecurityContext.Privileged = false
	s, err = containerSpec(t, c, sb, testImage, rt)
	if err != nil {
		t.Fatal(err)
	}
	cg, _ = findMount(s, "/sys/fs/cgroup")
	if slices.Contains(cg.Options, "nsdelegate") {
		t.Errorf("cgroup options %q copied with a cgroup namespace", cg.Options)
	}
}

func TestEnsurePropagationLookupError(t *testing.T) {
	rt := Runtime{LookupMount: func(string) (mountInfo, error) { return mountInfo{}, os.ErrNotExist }}
	err := rt.ensurePropagation("/x", true)
	wantCode(t, err, codes.FailedPrecondition, "find the mount of \"/x\"")
}

func TestSandboxBind(t *testing.T) {
	m := sandboxBind("/src", "/dst")
	if m.Destination != "/dst" || m.Type != "bind" || m.Source != "/src" ||
		!slices.Equal(m.Options, []string{"rbind", "ro", "nosuid", "nodev", "noexec"}) {
		t.Fatalf("sandboxBind = %+v", m)
	}
}
