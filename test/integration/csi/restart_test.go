package csi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berthdev/berth/test/csienv"
)

// loopResult is what the I/O loop process reports when it stops.
type loopResult struct {
	Ops      int64
	Failures []string
}

// TestMain lets the test binary double as the I/O loop process. The loop
// must not run inside the test process: the test starts the plugin, and a
// process that holds files on a FUSE mount cannot fork+exec that mount's
// server while it is down, because exec closes those files and each close
// waits for the server (FUSE FLUSH).
func TestMain(m *testing.M) {
	if dir := os.Getenv("BERTH_CSI_IOLOOP"); dir != "" {
		ioLoop(dir)
		return
	}
	os.Exit(m.Run())
}

// ioLoop writes, reads back and appends through dir until SIGTERM, then
// prints a loopResult as JSON. It writes "ready" once its held file is open.
func ioLoop(dir string) {
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() { <-sig; stop.Store(true) }()
	var (
		mu  sync.Mutex
		res loopResult
		ops atomic.Int64
		wg  sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		res.Failures = append(res.Failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// A file held open across the restarts, as a pod's log file would be.
	held, err := os.OpenFile(filepath.Join(dir, "held.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail("open held file: %v", err)
	}
	fmt.Println("ready")
	for w := 0; w < 2 && held != nil; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				name := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, i%50))
				want := bytes.Repeat([]byte(fmt.Sprintf("%d:%d;", w, i)), 512)
				if err := os.WriteFile(name, want, 0o644); err != nil {
					fail("write %s: %v", name, err)
					continue
				}
				got, err := os.ReadFile(name)
				if err != nil {
					fail("read %s: %v", name, err)
					continue
				}
				if !bytes.Equal(got, want) {
					fail("%s: read %d bytes that differ from the %d written", name, len(got), len(want))
				}
				if _, err := fmt.Fprintf(held, "%d %d\n", w, i); err != nil {
					fail("append to held file: %v", err)
				}
				ops.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if held != nil {
		held.Close()
	}
	res.Ops = ops.Load()
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

// startLoop runs ioLoop in a child process.
func startLoop(t *testing.T, dir string) (*exec.Cmd, *bufio.Reader) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_CSI_IOLOOP="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("I/O loop did not start: %q %v", line, err)
	}
	return cmd, r
}

// TestRestartSurvival writes and reads through a mounted volume in a loop
// while the node plugin is killed with SIGKILL and started again, twice.
// The fd store keeps the FUSE connection open, the new plugin takes it
// over, and the loop must see no error and lose no data.
func TestRestartSurvival(t *testing.T) {
	p := csienv.Start(t)
	id, dir := p.Volume("survive", 64*mib)
	loop, out := startLoop(t, dir)
	countLines := func() int {
		b, _ := os.ReadFile(filepath.Join(p.Root, "volumes", strings.Split(strings.TrimPrefix(id, "vol-"), ".")[0], "held.log"))
		return bytes.Count(b, []byte("\n"))
	}
	for round := 0; round < 2; round++ {
		time.Sleep(700 * time.Millisecond)
		p.KillPlugin()
		time.Sleep(500 * time.Millisecond) // I/O stalls in the kernel meanwhile
		before := countLines()
		p.StartPlugin()
		time.Sleep(700 * time.Millisecond)
		if countLines() == before {
			t.Errorf("round %d: no I/O completed after the restart", round)
		}
	}
	loop.Process.Signal(syscall.SIGTERM)
	var res loopResult
	line, err := out.ReadString('\n')
	if err == nil {
		err = json.Unmarshal([]byte(line), &res)
	}
	loop.Wait()
	if err != nil {
		t.Fatalf("I/O loop result: %v (%q)", err, line)
	}
	if len(res.Failures) > 0 {
		t.Fatalf("%d I/O errors across restarts (of %d loops); first: %s", len(res.Failures), res.Ops, res.Failures[0])
	}
	if res.Ops == 0 {
		t.Fatal("the I/O loop completed nothing")
	}
	t.Logf("%d write+read+append loops, 2 SIGKILL restarts, 0 errors", res.Ops)

	// The held file has every line: nothing written across the restarts
	// was lost.
	if n := countLines(); int64(n) != res.Ops {
		t.Errorf("held.log has %d lines, want %d", n, res.Ops)
	}
	if !strings.Contains(p.Log(), "took over live FUSE connection") {
		t.Errorf("the restarted plugin did not report a takeover")
	}

	// The taken-over volume still answers stats and unstages cleanly.
	ctx := csienv.Ctx(t)
	st, err := p.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: dir})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetUsage()[0].GetUsed() == 0 {
		t.Errorf("stats after takeover report 0 bytes used")
	}
	p.Unpublish(id)
	if m := csienv.MountsUnder(p.Dir); len(m) != 0 {
		t.Errorf("mounts left after unstage: %v", m)
	}
}

// TestFdStoreRestart restarts the fd store itself: the plugin re-parks its
// connections in the new store, so a later plugin restart still takes
// them over.
func TestFdStoreRestart(t *testing.T) {
	p := csienv.Start(t)
	_, dir := p.Volume("restore-holder", 16*mib)
	if err := os.WriteFile(filepath.Join(dir, "before"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.KillHolder()
	p.StartHolder()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.Log(), "re-parked FUSE descriptor") {
		if time.Now().After(deadline) {
			t.Fatal("the plugin did not re-park its descriptor in the new fd store")
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.KillPlugin()
	p.StartPlugin()
	if err := os.WriteFile(filepath.Join(dir, "after"), []byte("2"), 0o644); err != nil {
		t.Fatalf("write after both restarts: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "before")); err != nil || string(b) != "1" {
		t.Fatalf("read after both restarts: %q %v", b, err)
	}
	if !strings.Contains(p.Log(), "took over live FUSE connection") {
		t.Error("the plugin remounted instead of taking over")
	}
}
