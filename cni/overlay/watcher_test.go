package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait for an asynchronous effect. Tests poll or
// block until the effect shows up and only fail at this deadline, so they
// make no assumption about how fast inotify or the scheduler is.
const waitTimeout = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLogger collects debug records and hands them to t.Log only if the test
// fails, so passing runs stay quiet even with -v.
func testLogger(t *testing.T) *slog.Logger {
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log records:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writers a test's
// goroutines and watcher are.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeAtomic replaces path the way careful writers do: write a temporary
// file next to it and rename it over the old one, so readers never see a
// partial file and a watch on the old inode sees nothing.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-peers-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

func peersJSON(t *testing.T, peers ...Peer) []byte {
	t.Helper()
	if peers == nil {
		peers = []Peer{}
	}
	b, err := json.Marshal(peers)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call is one invocation of the fake apply function.
type call struct {
	peers   []Peer
	self    string
	podCIDR netip.Prefix
	vni     uint32
	table   int
}

// fakeWatcher wires a Watcher to a fake apply function and collects results.
type fakeWatcher struct {
	w       *Watcher
	calls   chan call
	results chan Result
	cancel  context.CancelFunc
	done    chan error
}

func startFakeWatcher(t *testing.T, path string, resync time.Duration, opts ...func(*Watcher)) *fakeWatcher {
	t.Helper()
	fw := &fakeWatcher{calls: make(chan call, 100), results: make(chan Result, 100), done: make(chan error, 1)}
	fw.w = &Watcher{
		Device:         Device{VNI: 1, LocalIP: netip.MustParseAddr("198.18.0.1")},
		PeersFile:      path,
		NodeName:       "n1",
		ResyncInterval: resync,
		Debounce:       10 * time.Millisecond,
		Logger:         testLogger(t),
		OnResult:       func(r Result) { fw.results <- r },
		apply: func(d *Device, peers []Peer, self string) (Stats, error) {
			fw.calls <- call{peers: peers, self: self, podCIDR: d.PodCIDR, vni: d.VNI, table: d.Table}
			return Stats{Peers: len(peers) - 1}, nil
		},
	}
	for _, o := range opts {
		o(fw.w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fw.cancel = cancel
	go func() { fw.done <- fw.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-fw.done:
		case <-time.After(waitTimeout):
			t.Error("watcher did not stop")
		}
	})
	return fw
}

// next waits for the next reconcile result.
func (fw *fakeWatcher) next(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-fw.results:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a reconcile")
		return Result{}
	}
}

// waitCall waits until apply is called with a peer list satisfying ok,
// skipping calls that do not (e.g. extra reconciles from event bursts).
func (fw *fakeWatcher) waitCall(t *testing.T, what string, ok func(call) bool) call {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case c := <-fw.calls:
			if ok(c) {
				return c
			}
		case <-deadline:
			t.Fatalf("timed out waiting for a reconcile with %s", what)
			return call{}
		}
	}
}

func hasNode(name string) func(call) bool {
	return func(c call) bool {
		for _, p := range c.peers {
			if p.NodeName == name {
				return true
			}
		}
		return false
	}
}

func lacksNode(name string) func(call) bool {
	return func(c call) bool { return !hasNode(name)(c) }
}

var (
	p1 = Peer{NodeName: "n1", UnderlayIP: "198.18.0.1", PodCIDR: "198.18.64.0/24"}
	p2 = Peer{NodeName: "n2", UnderlayIP: "198.18.0.2", PodCIDR: "198.18.65.0/24"}
	p3 = Peer{NodeName: "n3", UnderlayIP: "198.18.0.3", PodCIDR: "198.18.66.0/24"}
)

func TestWatcherFollowsAtomicRenames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, p1, p2))
	fw := startFakeWatcher(t, path, -1)

	r := fw.next(t)
	if r.Trigger != TriggerStart || !r.OK() {
		t.Fatalf("first result = %+v, want a successful start", r)
	}
	c := fw.waitCall(t, "n2", hasNode("n2"))
	if c.self != "n1" {
		t.Errorf("self = %q, want n1", c.self)
	}
	if want := netip.MustParsePrefix("198.18.64.0/24"); c.podCIDR != want {
		t.Errorf("pod CIDR = %s, want %s taken from the node's own entry", c.podCIDR, want)
	}

	writeAtomic(t, path, peersJSON(t, p1, p2, p3))
	fw.waitCall(t, "n3 added", hasNode("n3"))

	writeAtomic(t, path, peersJSON(t, p1, p2))
	fw.waitCall(t, "n3 removed", lacksNode("n3"))
}

func TestWatcherKeepsLastGoodOnBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, p1, p2, p3))
	fw := startFakeWatcher(t, path, -1)
	fw.waitCall(t, "n3", hasNode("n3"))
	drain(fw.results)

	writeAtomic(t, path, []byte(`[{"nodeName":"n1",`))
	// The reconcile for the bad file must re-apply the last good list,
	// not an empty one: a typo must never tear the overlay down.
	r := waitResult(t, fw, func(r Result) bool { return r.LoadErr != nil })
	if !r.Stale || r.Skipped || r.Err != nil || r.OK() {
		t.Fatalf("result for bad file = %+v, want stale re-apply", r)
	}
	fw.waitCall(t, "the last good list", hasNode("n3"))

	// Deleting the file is treated like a bad file too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r = waitResult(t, fw, func(r Result) bool { return r.LoadErr != nil && os.IsNotExist(unwrapAll(r.LoadErr)) })
	if !r.Stale {
		t.Fatalf("result for missing file = %+v, want stale re-apply", r)
	}

	writeAtomic(t, path, peersJSON(t, p1, p2))
	waitResult(t, fw, Result.OK)
	fw.waitCall(t, "the fixed file", lacksNode("n3"))
}

func TestWatcherStartsWithoutFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	fw := startFakeWatcher(t, path, -1)
	r := fw.next(t)
	if !r.Skipped || r.LoadErr == nil {
		t.Fatalf("start without file = %+v, want skipped with a load error", r)
	}
	select {
	case c := <-fw.calls:
		t.Fatalf("apply called without any good peer list: %+v", c)
	default:
	}
	writeAtomic(t, path, peersJSON(t, p1, p2))
	fw.waitCall(t, "n2", hasNode("n2"))
}

// TestWatcherConfigMapSwap mimics the kubelet's atomic writer: the visible
// file is a symlink through "..data", which is itself a symlink to a
// timestamped directory that is swapped by renaming a new symlink over it.
func TestWatcherConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(n int, data []byte) string {
		name := fmt.Sprintf("..2025_01_01_00_00_%02d.000000001", n)
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "peers.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	swap := func(target string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap(version(1, peersJSON(t, p1, p2)))
	if err := os.Symlink("..data/peers.json", filepath.Join(dir, "peers.json")); err != nil {
		t.Fatal(err)
	}

	fw := startFakeWatcher(t, filepath.Join(dir, "peers.json"), -1)
	fw.waitCall(t, "n2", hasNode("n2"))
	swap(version(2, peersJSON(t, p1, p2, p3)))
	fw.waitCall(t, "n3 after the ConfigMap update", hasNode("n3"))
}

func TestWatcherPeriodicResync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, p1, p2))
	fw := startFakeWatcher(t, path, 20*time.Millisecond)
	waitResult(t, fw, func(r Result) bool { return r.Trigger == TriggerResync && r.OK() })
}

func TestWatcherExplicitPodCIDRWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, p1, p2))
	fw := &Watcher{
		Device:    Device{VNI: 1, LocalIP: netip.MustParseAddr("198.18.0.1"), PodCIDR: netip.MustParsePrefix("198.18.99.0/24")},
		PeersFile: path, NodeName: "n1", ResyncInterval: -1, Logger: quietLogger(),
	}
	got := make(chan netip.Prefix, 1)
	fw.apply = func(d *Device, _ []Peer, _ string) (Stats, error) {
		got <- d.PodCIDR
		return Stats{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fw.Run(ctx) }()
	if p := <-got; p != netip.MustParsePrefix("198.18.99.0/24") {
		t.Errorf("pod CIDR = %s, want the explicit one", p)
	}
	if fw.Device.PodCIDR != netip.MustParsePrefix("198.18.99.0/24") {
		t.Errorf("watcher template was modified")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func TestWatcherSelfPodCIDRByUnderlayIP(t *testing.T) {
	w := &Watcher{Device: Device{LocalIP: netip.MustParseAddr("198.18.0.2")}, NodeName: "renamed"}
	if got, want := w.selfPodCIDR([]Peer{p1, p2, p3}), netip.MustParsePrefix("198.18.65.0/24"); got != want {
		t.Fatalf("selfPodCIDR = %s, want %s", got, want)
	}
	w.NodeName = "n3"
	if got, want := w.selfPodCIDR([]Peer{p1, p2, p3}), netip.MustParsePrefix("198.18.66.0/24"); got != want {
		t.Fatalf("selfPodCIDR by name = %s, want %s", got, want)
	}
	w = &Watcher{Device: Device{LocalIP: netip.MustParseAddr("198.18.0.9")}, NodeName: "n9"}
	if got := w.selfPodCIDR([]Peer{p1, p2}); got.IsValid() {
		t.Fatalf("selfPodCIDR for an unlisted node = %s, want none", got)
	}
}

func TestWatcherFailsOnMissingDirectory(t *testing.T) {
	w := &Watcher{PeersFile: filepath.Join(t.TempDir(), "nope", "peers.json"), Logger: quietLogger()}
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("Run with a missing directory succeeded")
	}
}

func waitResult(t *testing.T, fw *fakeWatcher, ok func(Result) bool) Result {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case r := <-fw.results:
			if ok(r) {
				return r
			}
		case <-deadline:
			t.Fatal("timed out waiting for a matching reconcile result")
			return Result{}
		}
	}
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.lock")
	l1, err := acquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	old := lockTimeout
	lockTimeout = 50 * time.Millisecond
	t.Cleanup(func() { lockTimeout = old })
	if _, err := acquireLock(path); err == nil {
		t.Fatal("second lock succeeded while the first is held")
	}

	// Once released, a waiter gets it.
	lockTimeout = waitTimeout
	var wg sync.WaitGroup
	wg.Add(1)
	got := make(chan error, 1)
	go func() {
		defer wg.Done()
		l2, err := acquireLock(path)
		if err == nil {
			l2.release()
		}
		got <- err
	}()
	l1.release()
	wg.Wait()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}
