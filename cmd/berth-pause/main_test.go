package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as berth-pause: with this variable set it runs
// main() instead of the tests, so the signal paths are exercised on the
// real process without a separate go build.
const runMain = "BERTH_PAUSE_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMain) != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestReapCollectsExitedChildren(t *testing.T) {
	var pids []int
	for range 3 {
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	// Wait until all three are zombies, then one reap call must take them all.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for procState(pid) != "Z" {
			if time.Now().After(deadline) {
				t.Fatalf("child %d never exited", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if n := reap(); n != 3 {
		t.Fatalf("reap() = %d, want 3", n)
	}
	if n := reap(); n != 0 {
		t.Fatalf("second reap() = %d, want 0", n)
	}
}

func TestExitsZeroOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := pauseCmd()
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The Go runtime catches every signal from start-up, so
			// SigCgt cannot tell when main's handlers are in place; the
			// not-PID-1 warning, printed right after them, does.
			line, err := bufio.NewReader(stderr).ReadString('\n')
			if !strings.HasPrefix(line, "Warning:") {
				t.Fatalf("first stderr line %q, %v", line, err)
			}
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("after %v: %v, want exit 0", sig, err)
			}
		})
	}
}

// TestReapsOrphansAsPID1 runs berth-pause as PID 1 of a new PID namespace,
// orphans a process inside it, and checks the orphan is reparented to
// berth-pause and then reaped instead of left a zombie.
func TestReapsOrphansAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("nsenter (util-linux) not installed")
	}
	cmd := pauseCmd()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pause := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// As PID 1 no warning marks readiness. None is needed for the orphan
	// (main reaps once right after installing its handlers), and seeing it
	// reaped proves the handlers are in place before SIGTERM is sent.

	// sh backgrounds sleep and exits at once, so sleep is orphaned inside
	// the namespace and its init, berth-pause, inherits it. sleep must not
	// hold the output pipe, or CombinedOutput would wait for it to exit.
	out, err := exec.Command(nsenter, "--target", strconv.Itoa(pause), "--pid", "--",
		"/bin/sh", "-c", "sleep 0.5 >/dev/null 2>&1 & exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	sawChild := false
	deadline := time.Now().Add(10 * time.Second)
	for {
		kids := childrenOf(pause)
		if len(kids) > 0 {
			sawChild = true
		}
		if sawChild && len(kids) == 0 {
			break // reparented, exited and reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("children of pause after 10s: %v (saw orphan: %v)", kids, sawChild)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("as PID 1 after SIGTERM: %v, want exit 0", err)
	}
}

func pauseCmd() *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runMain+"=1")
	return cmd
}

// procState returns the one-letter state of pid from /proc/PID/stat.
func procState(pid int) string {
	f := statFields(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if len(f) < 1 {
		return ""
	}
	return f[0]
}

// statFields returns the fields of a /proc stat file after "(comm)", which
// may itself hold spaces: [state, ppid, ...].
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// childrenOf lists "pid:state" of every process whose parent is ppid.
func childrenOf(ppid int) []string {
	ents, _ := os.ReadDir("/proc")
	var kids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		f := statFields(filepath.Join("/proc", e.Name(), "stat"))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			kids = append(kids, e.Name()+":"+f[0])
		}
	}
	return kids
}
