package crienv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
)

// SandboxImage is the pause image (berth-pause, pushed by
// hack/test-images.sh) both runtimes use for sandboxes.
const SandboxImage = "registry.k8s.io/pause:3.10.2"

// criPlugins are containerd 2.2's CRI plugin IDs (plugins/types.go,
// plugins/cri/...). berth-cri takes their place, so its containerd must not
// load them.
var criPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
}

// CRIPlugins returns the IDs of containerd's CRI plugins.
func CRIPlugins() []string { return append([]string(nil), criPlugins...) }

// ContainerdOptions configures StartContainerd.
type ContainerdOptions struct {
	// WithCRI enables containerd's own CRI plugin: the reference runtime
	// critest is compared against. Off, the four CRI plugins are disabled,
	// as berth-cri needs.
	WithCRI bool
	// The rest only apply WithCRI.
	HostsDir     string   // registry config_path (hosts.toml dirs); see EnsureRegistry
	CNIBinDirs   []string // default /opt/cni/bin
	CNIConfDir   string   // default /etc/cni/net.d
	SandboxImage string   // default SandboxImage
	// LogLevel of the daemon; default "info".
	LogLevel string
}

// Containerd is a private containerd started by StartContainerd.
type Containerd struct {
	tools   Paths
	withCRI bool
	dir     string        // everything below: root, state, sockets, config, log
	cmd     *exec.Cmd     // nil for a stale daemon found by sweepStale
	exited  chan struct{} // closed when cmd exits
	pid     int
	nss     map[string]bool // namespaces seen at cleanup
}

// Address is the gRPC socket path.
func (c *Containerd) Address() string { return filepath.Join(c.dir, "c.sock") }

// Root is containerd's persistent directory (content, snapshots, metadata).
func (c *Containerd) Root() string { return filepath.Join(c.dir, "root") }

// State is containerd's runtime directory (task bundles, CRI netns).
func (c *Containerd) State() string { return filepath.Join(c.dir, "state") }

// Tools are the binaries this daemon runs with.
func (c *Containerd) Tools() Paths { return c.tools }

// Dir holds root, state, the sockets, config.toml and containerd.log.
func (c *Containerd) Dir() string { return c.dir }

// LogPath is the daemon's combined stdout and stderr.
func (c *Containerd) LogPath() string { return filepath.Join(c.dir, "containerd.log") }

// Pid is the daemon's process ID.
func (c *Containerd) Pid() int { return c.pid }

// RuncOptions are the runc shim options for containers of this daemon:
// this package's runc (never the host's), with its state under State()
// instead of the shared /run/containerd/runc.
func (c *Containerd) RuncOptions() *options.Options {
	return &options.Options{BinaryName: c.tools.Runc, Root: filepath.Join(c.State(), "runc")}
}

// Client connects to the daemon; the client is closed at cleanup.
func (c *Containerd) Client(t testing.TB) *containerd.Client {
	t.Helper()
	cl, err := containerd.New(c.Address(), containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// StartContainerd starts a containerd of the test's own, waits until it
// serves, and registers a cleanup that stops it and everything it started
// (tasks, shims, mounts) and removes its directory. It skips the test when
// Require would.
func StartContainerd(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	tools := Require(t)
	sweepStale(t, tools)
	// Under /run and short: the daemon's unix sockets live in it, and
	// socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/run", dirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// Searchable by all, as /run/containerd is: with user namespaces the
	// container's root is an unprivileged host uid that must reach its
	// rootfs mount under State().
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{tools: tools, withCRI: opts.WithCRI, dir: dir, nss: map[string]bool{}}
	t.Cleanup(func() { c.cleanup(t) })
	// A test process killed before its cleanups run (go test -timeout,
	// SIGPIPE, ^C) leaves the daemon running; the owner file lets a later
	// run tell that it is stale (sweepStale).
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(selfID()), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config(opts)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	c.cmd = exec.Command(tools.Containerd, "--config", cfg)
	// containerd finds the shim, and the shim finds runc, on PATH. Ours go
	// first, in this child's environment only.
	c.cmd.Env = append(os.Environ(), "PATH="+tools.Dir+":"+os.Getenv("PATH"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	c.pid = c.cmd.Process.Pid
	c.exited = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(c.pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := c.waitServing(30 * time.Second); err != nil {
		t.Fatalf("containerd (pid %d): %v\n%s", c.Pid(), err, c.logTail())
	}
	t.Logf("containerd pid %d serving at %s (CRI: %v)", c.Pid(), c.Address(), opts.WithCRI)
	return c
}

// config renders config.toml (format version 3, containerd 2.x).
func (c *Containerd) config(o ContainerdOptions) string {
	level := o.LogLevel
	if level == "" {
		level = "info"
	}
	// NRI is off in both modes: neither runtime uses it, and it would
	// claim the machine-wide /var/run/nri/nri.sock.
	disabled := []string{"io.containerd.nri.v1.nri"}
	if !o.WithCRI {
		disabled = append(disabled, criPlugins...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by test/crienv.
version = 3
root = %q
state = %q
imports = []
disabled_plugins = %s

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
  level = %q
[metrics]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = %q
[plugins.'io.containerd.snapshotter.v1.overlayfs']
  root_path = ""
`, c.Root(), c.State(), tomlList(disabled), c.Address(), c.Address()+".ttrpc",
		filepath.Join(c.dir, "debug.sock"), level, filepath.Join(c.dir, "opt"))
	if !o.WithCRI {
		return b.String()
	}

	// The reference runtime: containerd's CRI with the same runc, sandbox
	// image, registry mirror and CNI as berth-cri. Without CAP_SYS_RESOURCE
	// (some VMs and containers drop it from the bounding set) runc cannot
	// set the sandbox's oom_score_adj of -998 and every sandbox fails to
	// start; restrict_oom_score_adj clamps it to containerd's own score.
	sandbox := o.SandboxImage
	if sandbox == "" {
		sandbox = SandboxImage
	}
	binDirs := o.CNIBinDirs
	if len(binDirs) == 0 {
		binDirs = []string{"/opt/cni/bin"}
	}
	confDir := o.CNIConfDir
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	fmt.Fprintf(&b, `
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q

[plugins.'io.containerd.cri.v1.runtime']
  # Pod netns bind mounts under state, not /var/run/netns: cleanup finds them.
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = %t
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = %s
    conf_dir = %q

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, sandbox, o.HostsDir, !CanLowerOOMScoreAdj(), c.tools.Runc, tomlList(binDirs), confDir)
	return b.String()
}

// CanLowerOOMScoreAdj reports whether this process may set a negative
// oom_score_adj, which needs CAP_SYS_RESOURCE (capability 24) in its
// effective set. Runtimes under test must clamp the -998 they give
// sandboxes when it is missing.
func CanLowerOOMScoreAdj() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<24) != 0
		}
	}
	return false
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (c *Containerd) waitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("exited during start-up: %v", c.cmd.ProcessState)
		default:
		}
		if _, err := os.Stat(c.Address()); err == nil {
			if ok, err := c.serving(); ok {
				return nil
			} else if time.Now().After(deadline) {
				return fmt.Errorf("not serving after %v: %v", timeout, err)
			}
		} else if time.Now().After(deadline) {
			return fmt.Errorf("no socket after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Containerd) serving() (bool, error) {
	cl, err := containerd.New(c.Address(), containerd.WithTimeout(2*time.Second))
	if err != nil {
		return false, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.IsServing(ctx)
}

func (c *Containerd) logTail() string {
	b, _ := os.ReadFile(c.LogPath())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "--- containerd.log (tail) ---\n" + string(b)
}
