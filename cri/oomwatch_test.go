package cri

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/mountinfo"
)

func TestDecideOOM(t *testing.T) {
	for _, tc := range []struct {
		name    string
		e       oomEvidence
		sigkill bool
		want    oomVerdict
	}{
		{"nothing known", oomEvidence{}, true, oomUnknown},
		{"counter grew", oomEvidence{counter: true, counterDelta: 1}, true, oomYes},
		{"counter grew, child killed, init exited 1", oomEvidence{counter: true, counterDelta: 2}, false, oomYes},
		{"counter still, kill was elsewhere", oomEvidence{counter: true, eventfd: true, notified: 1}, true, oomNo},
		{"cgroup gone, notified while it existed", oomEvidence{eventfd: true, notified: 1}, true, oomYes},
		{"cgroup gone, OOM and removal read together", oomEvidence{eventfd: true, afterGone: 2}, true, oomYes},
		{"cgroup gone, one signal", oomEvidence{eventfd: true, afterGone: 1}, true, oomMaybe},
		{"cgroup gone, no signal yet", oomEvidence{eventfd: true}, true, oomNo},
		{"v2 parent grew on SIGKILL", oomEvidence{parent: true, parentDelta: 1}, true, oomYes},
		{"v2 parent grew, exit 1 (a sibling)", oomEvidence{parent: true, parentDelta: 1}, false, oomNo},
		{"v2 parent still", oomEvidence{parent: true}, true, oomNo},
		{"own counter beats parent", oomEvidence{counter: true, parent: true, parentDelta: 3}, true, oomNo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideOOM(tc.e, tc.sigkill); got != tc.want {
				t.Fatalf("decideOOM(%+v, %v) = %s, want %s", tc.e, tc.sigkill, got, tc.want)
			}
		})
	}
}

func TestResolveMemoryCgroup(t *testing.T) {
	hybrid := mountinfo.Parse(`30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct`)
	unified := mountinfo.Parse(`30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate`)
	// Docker without a cgroup namespace: the mount's root is the
	// container's own cgroup, and /proc/<pid>/cgroup shows full paths.
	hostNS := mountinfo.Parse(`40 30 0:33 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory`)
	for _, tc := range []struct {
		name   string
		cg     string
		mounts []mountinfo.Mount
		dir    string
		v2     bool
		err    bool
	}{
		{"v1 hybrid, systemd scope", "12:pids:/x\n4:memory:/kubelet.slice/kubelet-kubepods.slice/cri-containerd-1.scope\n0::/kubelet.slice\n",
			hybrid, "/sys/fs/cgroup/memory/kubelet.slice/kubelet-kubepods.slice/cri-containerd-1.scope", false, false},
		{"v1, cgroupfs", "4:memory:/k8s.io/abc\n", hybrid, "/sys/fs/cgroup/memory/k8s.io/abc", false, false},
		{"v2", "0::/kubepods.slice/pod.slice/c.scope\n", unified, "/sys/fs/cgroup/kubepods.slice/pod.slice/c.scope", true, false},
		{"mount root strips", "4:memory:/docker/abc/k8s.io/c1\n", hostNS, "/sys/fs/cgroup/memory/k8s.io/c1", false, false},
		{"path outside the mount", "4:memory:/other/c1\n", hostNS, "", false, true},
		{"no memory line", "3:cpu:/x\n", hybrid, "", false, true},
		{"no memory mount", "4:memory:/x\n", unified, "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, v2, err := resolveMemoryCgroup(tc.cg, tc.mounts)
			if (err != nil) != tc.err || dir != tc.dir || v2 != tc.v2 {
				t.Fatalf("got %q, v2=%v, err=%v; want %q, v2=%v, err=%v", dir, v2, err, tc.dir, tc.v2, tc.err)
			}
		})
	}
}

func TestReadOOMKill(t *testing.T) {
	for _, tc := range []struct {
		name, file, text string
		v2               bool
		want             uint64
		err              bool
	}{
		{"v1", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", false, 3, false},
		{"v2", "memory.events", "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n", true, 1, false},
		{"v1 before 4.13", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n", false, 0, true},
		{"missing file", "", "", false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readOOMKill(dir, tc.v2)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("readOOMKill = %d, %v; want %d, err=%v", got, err, tc.want, tc.err)
			}
		})
	}
}

// v1MemoryTestCgroup makes a memory cgroup below this process's own, with
// a limit, or skips when the kernel and mounts do not allow it. The
// cgroup is removed (its processes killed) in Cleanup.
func v1MemoryTestCgroup(t *testing.T, limit int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a memory cgroup")
	}
	own, v2, err := memoryCgroupDir(uint32(os.Getpid()))
	if err != nil {
		t.Skipf("no memory cgroup: %v", err)
	}
	if v2 {
		t.Skip("the memory controller is cgroup v2 here; the eventfd notification API is v1's")
	}
	dir := filepath.Join(own, fmt.Sprintf("berth-oomtest-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a memory cgroup: %v", err)
	}
	t.Cleanup(func() { removeTestCgroup(dir) })
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(fmt.Sprint(limit)), 0); err != nil {
		t.Skipf("cannot set a memory limit: %v", err)
	}
	// Without swap accounting the limit covers memory only; with swap the
	// hog could page out instead of being killed.
	_ = os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(fmt.Sprint(limit)), 0)
	_ = os.WriteFile(filepath.Join(dir, "memory.swappiness"), []byte("0"), 0)
	return dir
}

func removeTestCgroup(dir string) {
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startInCgroup starts "sh -c script" paused on its stdin, moves it into
// dir, and returns it with a function that lets it go.
func startInCgroup(t *testing.T, dir, script string) (*exec.Cmd, func()) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "read go; "+script)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move into cgroup: %v", err)
	}
	return cmd, func() { _, _ = in.Write([]byte("go\n")) }
}

func waitKilled(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("process ended with %v, want SIGKILL", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("process ended with %v, want SIGKILL", err)
	}
}

// readEventfd sums what the eventfd has been signalled, polling until the
// total reaches want or the deadline passes.
func readEventfd(t *testing.T, efd int, want uint64, d time.Duration) uint64 {
	t.Helper()
	var total uint64
	deadline := time.Now().Add(d)
	for {
		var buf [8]byte
		if n, err := unix.Read(efd, buf[:]); err == nil && n == 8 {
			total += binary.NativeEndian.Uint64(buf[:])
		}
		if total >= want || time.Now().After(deadline) {
			return total
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The kernel behaviour oomwatch.go rests on, checked on this kernel: an
// OOM kill signals the memory.oom_control eventfd before the process dies,
// the cgroup's removal signals it exactly once more, and a plain SIGKILL
// followed by removal gives only the removal notice.
func TestKernelOOMEventfdSemantics(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		oom    bool
	}{
		{"OOM kill then removal", "exec tail /dev/zero", true},
		{"SIGKILL then removal", "exec sleep 1000", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := v1MemoryTestCgroup(t, 32<<20)
			efd, err := registerOOMEventfd(dir)
			if err != nil {
				t.Skipf("cannot register an OOM eventfd: %v", err)
			}
			defer unix.Close(efd)
			cmd, release := startInCgroup(t, dir, tc.script)
			release()
			if !tc.oom {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
			waitKilled(t, cmd)
			kills, err := readOOMKill(dir, false)
			if err != nil {
				t.Skipf("no oom_kill counter: %v", err)
			}
			if got := kills > 0; got != tc.oom {
				t.Fatalf("oom_kill = %d, want an OOM kill: %v", kills, tc.oom)
			}
			// What a systemd scope's end does: the cgroup goes away.
			removeTestCgroup(dir)
			want := uint64(1)
			if tc.oom {
				want = 2
			}
			got := readEventfd(t, efd, want, 10*time.Second)
			// Let anything late arrive before checking nothing extra came.
			got += readEventfd(t, efd, 1<<62, 200*time.Millisecond)
			t.Logf("eventfd signalled %d times", got)
			if tc.oom && got < 2 || !tc.oom && got != 1 {
				t.Fatalf("eventfd signalled %d times; want %s", got, map[bool]string{true: ">= 2 (OOM + removal)", false: "1 (removal)"}[tc.oom])
			}
		})
	}
}

// The watch as berth-cri runs it, with the cgroup kept (cgroupfs driver)
// and removed before the exit is examined (systemd driver); without the
// reader goroutine, every signal is read only when the exit is examined,
// which is the reader losing every race.
func TestOOMWatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		script    string
		oom       bool
		removed   bool
		reader    bool
		patience  time.Duration
		wantCount bool // decided by the oom_kill counter
	}{
		{"OOM, cgroup kept", "exec tail /dev/zero", true, false, true, 0, true},
		{"OOM, cgroup removed", "exec tail /dev/zero", true, true, true, 5 * time.Second, false},
		{"OOM, cgroup removed, signals read late", "exec tail /dev/zero", true, true, false, 5 * time.Second, false},
		{"SIGKILL, cgroup kept", "exec sleep 1000", false, false, true, 0, true},
		{"SIGKILL, cgroup removed", "exec sleep 1000", false, true, true, 2 * time.Second, false},
		{"SIGKILL, cgroup removed, signals read late", "exec sleep 1000", false, true, false, 2 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := v1MemoryTestCgroup(t, 32<<20)
			cmd, release := startInCgroup(t, dir, tc.script)
			var w *oomWatch
			var err error
			if tc.reader {
				w, err = watchCgroupOOM(uint32(cmd.Process.Pid))
			} else {
				w, err = newOOMWatch(dir, false, false)
			}
			if err != nil {
				t.Skipf("cannot watch the cgroup: %v", err)
			}
			defer w.close()
			if w.dir != dir {
				t.Fatalf("watch resolved %s, want %s", w.dir, dir)
			}
			release()
			if !tc.oom {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
			waitKilled(t, cmd)
			if tc.removed {
				removeTestCgroup(dir)
			}
			v, e := w.decide(true, tc.patience)
			t.Logf("verdict %s from [%s]", v, e)
			want := oomNo
			if tc.oom {
				want = oomYes
			}
			if v != want || e.counter != tc.wantCount {
				t.Fatalf("verdict %s from [%s]; want %s (counter used: %v)", v, e, want, tc.wantCount)
			}
		})
	}
}
