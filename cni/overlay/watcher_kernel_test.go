package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// hasRoute reports whether node n has a route for dst on its VXLAN device.
func (n *node) hasRoute(t *testing.T, dst string) bool {
	t.Helper()
	want := netip.MustParsePrefix(dst)
	found := false
	n.Do(t, func() error {
		l, err := netlink.LinkByName(n.dev.Name())
		if err != nil {
			return nil // no device yet: no route
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if prefixFrom(r.Dst) == want {
				found = true
			}
		}
		return nil
	})
	return found
}

// waitRoute polls until the route for dst is present (or absent), failing
// only at the deadline.
func (n *node) waitRoute(t *testing.T, dst string, present bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for n.hasRoute(t, dst) != present {
		if time.Now().After(deadline) {
			t.Fatalf("%s: route %s present=%t, still not %t after %s", n.name, dst, !present, present, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatcherProgramsKernel(t *testing.T) {
	n1, n2 := newCluster(t)
	p3 := Peer{NodeName: "n3", UnderlayIP: "198.18.0.3", PodCIDR: "198.18.66.0/24"}
	path := filepath.Join(t.TempDir(), "peers.json")
	writeAtomic(t, path, peersJSON(t, n1.peer(), n2.peer()))

	results := make(chan Result, 100)
	w := &Watcher{
		// No PodCIDR: it must come from n1's entry in the file.
		Device:         Device{VNI: 1, LocalIP: n1.underlay, LockDir: n1.dev.LockDir, Logger: testLogger(t)},
		PeersFile:      path,
		NodeName:       n1.name,
		ResyncInterval: -1, // only file events may cause reconciles here
		Debounce:       10 * time.Millisecond,
		Logger:         testLogger(t),
		OnResult:       func(r Result) { results <- r },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n1.Run(func() error { return w.Run(ctx) }) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(waitTimeout):
			return fmt.Errorf("watcher did not stop within %s", waitTimeout)
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})

	n1.waitRoute(t, "198.18.65.0/24", true)
	if s := n1.snapshot(t); len(s.addrs) != 1 || s.addrs[0] != netip.MustParsePrefix("198.18.64.0/32") {
		t.Errorf("device addresses = %v, want the network address of n1's own pod CIDR", s.addrs)
	}

	writeAtomic(t, path, peersJSON(t, n1.peer(), n2.peer(), p3))
	n1.waitRoute(t, "198.18.66.0/24", true)
	n1.checkRemotes(t, n2.peer(), p3)

	// A broken file keeps the overlay as it was.
	drain(results)
	writeAtomic(t, path, []byte(`[{"nodeName": "n1", "underlayIP": "198.18.0.1", "podCIDR": "oops"}]`))
	deadline := time.After(waitTimeout)
	for seen := false; !seen; {
		select {
		case r := <-results:
			if r.LoadErr != nil {
				if r.Err != nil || !r.Stale {
					t.Fatalf("result for the broken file = %+v, want a clean re-apply of the last good list", r)
				}
				seen = true
			}
		case <-deadline:
			t.Fatal("timed out waiting for the reconcile of the broken file")
		}
	}
	n1.checkRemotes(t, n2.peer(), p3)

	writeAtomic(t, path, peersJSON(t, n1.peer(), n2.peer()))
	n1.waitRoute(t, "198.18.66.0/24", false)
	n1.checkRemotes(t, n2.peer())

	// Stopping leaves the device and its state in place.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	n1.checkRemotes(t, n2.peer())
}
