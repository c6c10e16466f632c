package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper processes are this test binary re-executed with -test.run pointing
// at TestHelperProcess and the work described in the environment. That gives
// real, separate processes (separate flock holders, killable with SIGKILL)
// without building another binary.
const (
	envMode  = "BERTH_IPAM_HELPER"
	envDir   = "BERTH_IPAM_DIR"
	envID    = "BERTH_IPAM_ID"
	envCount = "BERTH_IPAM_COUNT"
)

var helperCfg = Config{Subnet: "198.18.10.0/24"}

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envMode)
	if mode == "" {
		t.Skip("only runs as a re-executed helper")
	}
	cfg := helperCfg
	cfg.DataDir = os.Getenv(envDir)
	a, err := New(testNet, &cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	id := os.Getenv(envID)
	count, _ := strconv.Atoi(os.Getenv(envCount))
	switch mode {
	case "alloc":
		for i := 0; i < count; i++ {
			if _, _, err := a.Allocate(att(fmt.Sprintf("%s-%d", id, i))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	case "churn":
		// Allocate and release forever, keeping a few addresses live, so
		// a kill lands in the middle of some write or delete.
		for i := 0; ; i++ {
			if _, _, err := a.Allocate(att(fmt.Sprintf("%s-%d", id, i))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if i >= 5 {
				if err := a.Release(att(fmt.Sprintf("%s-%d", id, i-5))); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		os.Exit(2)
	}
	os.Exit(0)
}

func helper(t *testing.T, mode, dir, id string, count int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envMode+"="+mode, envDir+"="+dir, envID+"="+id, envCount+"="+strconv.Itoa(count))
	cmd.Stderr = &strings.Builder{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const procs, each = 4, 25
	var cmds []*exec.Cmd
	for p := 0; p < procs; p++ {
		cmds = append(cmds, helper(t, "alloc", dir, fmt.Sprint("p", p), each))
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, c.Stderr)
		}
	}
	cfg := helperCfg
	cfg.DataDir = dir
	a, err := New(testNet, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != procs*each {
		t.Fatalf("List has %d addresses, want %d", len(l), procs*each)
	}
	owners := map[Attachment]netip.Addr{}
	for addr, at := range l {
		if prev, dup := owners[at]; dup {
			t.Fatalf("%v holds both %s and %s", at, prev, addr)
		}
		owners[at] = addr
	}
	for p := 0; p < procs; p++ {
		for i := 0; i < each; i++ {
			if _, ok := owners[att(fmt.Sprintf("p%d-%d", p, i))]; !ok {
				t.Errorf("allocation p%d-%d lost", p, i)
			}
		}
	}
	if files := addrFiles(t, a.Dir()); len(files) != procs*each {
		t.Fatalf("%d address files, want %d", len(files), procs*each)
	}
}

func TestKilledProcessLeavesConsistentStore(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	cfg := helperCfg
	cfg.DataDir = dir
	a, err := New(testNet, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 4; round++ {
		// Two churning writers contend for the lock, so one is often
		// killed while holding it, the other while waiting for it.
		var cmds []*exec.Cmd
		for p := 0; p < 2; p++ {
			cmds = append(cmds, helper(t, "churn", dir, fmt.Sprintf("r%d-p%d", round, p), 0))
		}
		// Wait until they are really churning (a race-enabled binary
		// takes a moment to start), then kill at a random point.
		deadline := time.Now().Add(30 * time.Second)
		for len(liveFiles(a.Dir())) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: helpers never allocated", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(20+rand.IntN(100)) * time.Millisecond)
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGKILL)
		}
		for _, c := range cmds {
			err := c.Wait()
			if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Fatalf("helper did not die by signal (%v): %s", err, c.Stderr)
			}
		}

		// Every record left must be complete: no torn files, no second
		// address for one attachment, and a working lock.
		l, err := a.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(l) == 0 {
			t.Fatalf("round %d: helpers allocated nothing before being killed", round)
		}
		owners := map[Attachment]netip.Addr{}
		for addr, at := range l {
			if at == (Attachment{}) {
				t.Fatalf("round %d: %s has a torn or unparsable record", round, addr)
			}
			if prev, dup := owners[at]; dup {
				t.Fatalf("round %d: %v holds %s and %s", round, at, prev, addr)
			}
			owners[at] = addr
		}
		// The churn keeps at most 6 live per helper: one more than the
		// 5 it lags behind, when killed between Allocate and Release.
		if len(l) > 2*6 {
			t.Fatalf("round %d: %d live addresses, want <= 12", round, len(l))
		}
		// Killed writers may leave stale index entries, never a holder
		// without one.
		checkIndex(t, a)
		p := mustAlloc(t, a, att(fmt.Sprint("after-", round)))
		if _, taken := l[p.Addr()]; taken {
			t.Fatalf("round %d: handed out %s which is still held", round, p)
		}
		if tmp := tmpFiles(t, a.Dir()); len(tmp) != 0 {
			t.Fatalf("round %d: temp files left after a locked operation: %v", round, tmp)
		}
		// Clean up so each round starts from a known state.
		if _, err := a.GC(nil); err != nil {
			t.Fatal(err)
		}
	}
}

// liveFiles is addrFiles without *testing.T, for polling a directory that may
// not exist yet.
func liveFiles(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if _, ok := addrFromFileName(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}
