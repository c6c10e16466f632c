package integration

import (
	"slices"
	"strings"
	"testing"
)

// TestMacvlanLifecycle adds two pods per macvlan mode, checks connectivity
// where the mode allows it, runs CHECK, deletes, and verifies that nothing
// is left: no link in the node or the pods, no allocation file.
func TestMacvlanLifecycle(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		mode string
		// pods on one bridge-mode master talk directly; private isolates
		// them; vepa and passthru need an external switch (or allow one
		// child only), so only the attachment itself is verified there.
		canPing bool
		pods    int
	}{
		{mode: "bridge", canPing: true, pods: 2},
		{mode: "private", pods: 2},
		{mode: "vepa", pods: 2},
		{mode: "passthru", pods: 1},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			n := newMacvlanNode(t)
			before := n.links(t)
			conf := netConf(t, "1.1.0", "bti-mv", "macvlan", n.Uplink, "198.18.10.0/24",
				map[string]any{"macvlanMode": tc.mode})
			var pods []pod
			for i := 0; i < tc.pods; i++ {
				pods = append(pods, n.add(t, conf))
			}
			for _, p := range pods {
				if got := p.ns.ip(t, "-d", "link", "show", "eth0"); !strings.Contains(got, "macvlan mode "+tc.mode) {
					t.Errorf("pod link is not macvlan mode %s:\n%s", tc.mode, got)
				}
				if err := n.check(t, conf, p); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if tc.canPing {
				if err := pods[0].ns.ping(pods[1].ip()); err != nil {
					t.Error(err)
				}
				if err := pods[1].ns.ping(pods[0].ip()); err != nil {
					t.Error(err)
				}
			} else if tc.mode == "private" {
				if err := pods[0].ns.ping(pods[1].ip()); err == nil {
					t.Error("private macvlan pods reached each other")
				}
			}
			if got := len(allocations(t, dataDirOf(t, conf), "bti-mv")); got != tc.pods {
				t.Errorf("%d allocations, want %d", got, tc.pods)
			}
			for _, p := range pods {
				n.del(t, conf, p)
				if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
					t.Errorf("pod links after DEL: %v", got)
				}
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-mv"); len(got) != 0 {
				t.Errorf("allocations left after DEL: %v", got)
			}
			if after := n.links(t); !slices.Equal(before, after) {
				t.Errorf("node links changed: before %v after %v", before, after)
			}
		})
	}
}

// TestCheckDetectsDrift removes what ADD built and expects CHECK to fail.
func TestCheckDetectsDrift(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	conf := netConf(t, "1.1.0", "bti-drift", "macvlan", n.Uplink, "198.18.11.0/24", nil)
	tests := []struct {
		name   string
		break_ func(p pod)
	}{
		{"address removed", func(p pod) { p.ns.ip(t, "addr", "flush", "dev", "eth0") }},
		{"default route removed", func(p pod) { p.ns.ip(t, "route", "del", "default") }},
		{"link removed", func(p pod) { p.ns.ip(t, "link", "del", "eth0") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := n.add(t, conf)
			defer n.del(t, conf, p)
			if err := n.check(t, conf, p); err != nil {
				t.Fatalf("CHECK before drift: %v", err)
			}
			tc.break_(p)
			if err := n.check(t, conf, p); err == nil {
				t.Fatal("CHECK passed after drift")
			}
		})
	}
}
