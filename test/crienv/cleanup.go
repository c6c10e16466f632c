package crienv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/berthdev/berth/internal/mountinfo"
)

const (
	dirPrefix = "bti-ctd-" // /run/bti-ctd-XXXX, one per daemon
	ownerFile = "owner"    // "PID STARTTIME" of the test process
	pidFile   = "containerd.pid"
)

// running reports whether the daemon is still up.
func (c *Containerd) running() bool {
	if c.exited != nil {
		select {
		case <-c.exited:
			return false
		default:
			return true
		}
	}
	return c.isDaemon()
}

// isDaemon checks that c.pid still is this directory's containerd, never a
// recycled PID.
func (c *Containerd) isDaemon() bool {
	if c.pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(c.pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte(filepath.Join(c.dir, "config.toml")))
}

// waitExit waits up to d for the daemon to exit.
func (c *Containerd) waitExit(d time.Duration) bool {
	if c.exited != nil {
		select {
		case <-c.exited:
			return true
		case <-time.After(d):
			return false
		}
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !c.isDaemon() {
			return true
		}
	}
	return !c.isDaemon()
}

// cleanup tears everything down, most polite first: pods via CRI (so CNI
// releases their addresses), then tasks and containers via the API, then
// the daemon (TERM, then KILL), then any shim left with its whole process
// tree, then mounts below dir, and finally dir. Each step is best effort,
// so a failed test still leaves nothing behind.
func (c *Containerd) cleanup(t testing.TB) {
	if c.running() {
		if c.withCRI {
			out, err := exec.Command(c.tools.Crictl, "--runtime-endpoint", "unix://"+c.Address(),
				"--timeout", "30s", "rmp", "--all", "--force").CombinedOutput()
			if err != nil {
				t.Logf("cleanup: crictl rmp: %v: %s", err, out)
			}
		}
		c.removeAll(t)
		_ = syscall.Kill(c.pid, syscall.SIGTERM)
		if !c.waitExit(10 * time.Second) {
			t.Logf("cleanup: containerd pid %d ignored SIGTERM; killing it", c.pid)
			_ = syscall.Kill(c.pid, syscall.SIGKILL)
			c.waitExit(5 * time.Second)
		}
	}
	c.killShims(t)
	c.removeLeftovers(t)
	c.removeNamespaceDirs()
	if err := unmountUnder(c.dir); err != nil {
		t.Logf("cleanup: %v", err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

var sweepOnce sync.Once

// sweepStale cleans up, once per test process, the directories (and
// daemons, shims, mounts) of earlier test processes that died before their
// cleanups ran. A directory is stale when the process in its owner file is
// gone (or its PID was reused); live tests' daemons are never touched. An
// flock keeps concurrent test processes from sweeping the same directory.
func sweepStale(t testing.TB, tools Paths) {
	sweepOnce.Do(func() {
		lock, err := os.OpenFile("/run/"+dirPrefix+"sweep.lock", os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return
		}
		defer lock.Close()
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX) != nil {
			return
		}
		dirs, _ := filepath.Glob("/run/" + dirPrefix + "*")
		for _, dir := range dirs {
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				continue
			}
			owner, err := os.ReadFile(filepath.Join(dir, ownerFile))
			if err != nil {
				// Just created by a starting test that has not written its
				// owner file yet, or not ours at all.
				continue
			}
			if pidAlive(string(owner)) {
				continue
			}
			c := &Containerd{tools: tools, dir: dir, nss: map[string]bool{}}
			if b, err := os.ReadFile(filepath.Join(dir, pidFile)); err == nil {
				c.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
			if cfg, err := os.ReadFile(filepath.Join(dir, "config.toml")); err == nil {
				c.withCRI = !bytes.Contains(cfg, []byte(`"io.containerd.grpc.v1.cri"`))
			}
			t.Logf("crienv: cleaning up %s, left by dead test process %s", dir, strings.TrimSpace(string(owner)))
			c.cleanup(t)
		}
	})
}

// selfID identifies this process across PID reuse: "PID STARTTIME".
func selfID() string {
	return fmt.Sprintf("%d %s\n", os.Getpid(), startTime(os.Getpid()))
}

// pidAlive reports whether the "PID STARTTIME" process still runs.
func pidAlive(id string) bool {
	f := strings.Fields(id)
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	return err == nil && startTime(pid) == f[1]
}

// startTime is field 22 of /proc/PID/stat (clock ticks after boot), or "".
func startTime(pid int) string {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// removeAll deletes every task and container in every namespace.
func (c *Containerd) removeAll(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := containerd.New(c.Address(), containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Logf("cleanup: client: %v", err)
		return
	}
	defer cl.Close()
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		t.Logf("cleanup: namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		c.nss[ns] = true
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := cl.Containers(nctx)
		if err != nil {
			t.Logf("cleanup: containers in %s: %v", ns, err)
			continue
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				if _, err := task.Delete(nctx, containerd.WithProcessKill); err != nil {
					t.Logf("cleanup: task %s/%s: %v", ns, ctr.ID(), err)
				}
			}
			if err := ctr.Delete(nctx, containerd.WithSnapshotCleanup); err != nil {
				t.Logf("cleanup: container %s/%s: %v", ns, ctr.ID(), err)
			}
		}
	}
}

// killShims SIGKILLs every shim serving this daemon, found by the
// "-address <our socket>" of its command line, with all its descendants:
// the runc shim is a subreaper, so container processes are its children.
func (c *Containerd) killShims(t testing.TB) {
	procs := processes()
	var victims []int
	for pid, p := range procs {
		if strings.Contains(filepath.Base(p.argv0), "containerd-shim") && hasArgPair(p.args, "-address", c.Address()) {
			victims = append(victims, descendants(procs, pid)...)
			victims = append(victims, pid)
		}
	}
	if len(victims) == 0 {
		return
	}
	t.Logf("cleanup: killing leftover shim processes %v", victims)
	for _, pid := range victims {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range victims {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // zombies until init reaps them
		}
	}
}

// removeLeftovers cleans what killed shims leave outside dir, for every
// task bundle still in State(): the shim's socket under /run/containerd/s,
// runc's state (under the shared /run/containerd/runc unless the client set
// a Root, as RuncOptions does) and the container's cgroups.
func (c *Containerd) removeLeftovers(t testing.TB) {
	bundles, _ := filepath.Glob(filepath.Join(c.State(), "io.containerd.runtime.v2.task", "*", "*"))
	for _, b := range bundles {
		ns, id := filepath.Base(filepath.Dir(b)), filepath.Base(b)
		c.nss[ns] = true
		var boot struct {
			Address string `json:"address"`
		}
		if j, err := os.ReadFile(filepath.Join(b, "bootstrap.json")); err == nil {
			_ = json.Unmarshal(j, &boot)
		} else if a, err := os.ReadFile(filepath.Join(b, "address")); err == nil { // before containerd 2.0
			boot.Address = strings.TrimSpace(string(a))
		}
		if sock := strings.TrimPrefix(boot.Address, "unix://"); strings.HasPrefix(sock, "/run/containerd/s/") {
			_ = os.Remove(sock)
		}

		var opts struct {
			Root string `json:"root"`
		}
		if j, err := os.ReadFile(filepath.Join(b, "options.json")); err == nil {
			_ = json.Unmarshal(j, &opts)
		}
		if opts.Root == "" {
			opts.Root = "/run/containerd/runc"
		}
		_ = os.RemoveAll(filepath.Join(opts.Root, ns, id))

		var spec struct {
			Linux struct {
				CgroupsPath string `json:"cgroupsPath"`
			} `json:"linux"`
		}
		if j, err := os.ReadFile(filepath.Join(b, "config.json")); err == nil {
			_ = json.Unmarshal(j, &spec)
		}
		if err := removeCgroup(spec.Linux.CgroupsPath); err != nil {
			t.Logf("cleanup: task %s/%s: %v", ns, id, err)
		}
	}
}

// removeCgroup removes a cgroupfs-style cgroup path ("/ns/id", as
// containerd's default spec sets it) from every hierarchy, then its parent
// if empty. A path with a ":" is systemd-style and left alone.
func removeCgroup(path string) error {
	if path == "" || strings.Contains(path, ":") {
		return nil
	}
	path = filepath.Clean("/" + path)
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup")
	var last error
	for _, h := range hierarchies {
		dir := filepath.Join(h, path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		// The killed processes may take a moment to leave the cgroup.
		for i := 0; ; i++ {
			err := syscall.Rmdir(dir)
			if err == nil || err == syscall.ENOENT {
				break
			}
			if i == 50 {
				last = fmt.Errorf("rmdir %s: %w", dir, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return last
}

// removeNamespaceDirs removes the per-namespace parents that runc and
// containerd leave behind even after a clean delete (/run/containerd/runc/NS
// and the /NS cgroups), when empty. Namespaces other runtimes on the machine
// use are left alone: removing a parent while one of them creates a child
// in it would fail that create.
func (c *Containerd) removeNamespaceDirs() {
	for ns := range c.nss {
		if ns == "k8s.io" || ns == "moby" || ns == "default" || strings.ContainsAny(ns, "/.") {
			continue
		}
		_ = syscall.Rmdir(filepath.Join("/run/containerd/runc", ns))
		hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
		for _, h := range append(hierarchies, "/sys/fs/cgroup") {
			_ = syscall.Rmdir(filepath.Join(h, ns))
		}
	}
}

type proc struct {
	ppid  int
	argv0 string
	args  []string
}

// processes reads every process's parent and command line from /proc.
func processes() map[int]proc {
	m := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after "(comm)", which may hold spaces: state, ppid, ...
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		m[pid] = proc{ppid: ppid, argv0: args[0], args: args}
	}
	return m
}

func descendants(procs map[int]proc, root int) []int {
	var out []int
	for pid, p := range procs {
		if p.ppid == root {
			out = append(out, descendants(procs, pid)...)
			out = append(out, pid)
		}
	}
	return out
}

func hasArgPair(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if (args[i] == flag || args[i] == "-"+flag) && args[i+1] == value {
			return true
		}
	}
	return false
}

// unmountUnder lazily unmounts every mount point below dir, deepest first
// (overlay rootfs, shm, netns bind mounts). "/" is private here, so this
// never propagates anywhere.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := mountinfo.Unescape(f[4])
		if strings.HasPrefix(mp, dir+"/") || mp == dir {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []string
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			errs = append(errs, fmt.Sprintf("unmount %s: %v", p, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
