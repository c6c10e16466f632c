package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// vxlanConfs writes a peers file naming both nodes and returns one
// configuration per node; each node's ipam.subnet is its pod CIDR.
func vxlanConfs(t *testing.T, a, b node, version string) ([]byte, []byte) {
	t.Helper()
	peers := []map[string]string{
		{"nodeName": "bti-a", "underlayIP": "198.18.0.1", "podCIDR": "198.18.64.0/24"},
		{"nodeName": "bti-b", "underlayIP": "198.18.0.2", "podCIDR": "198.18.65.0/24"},
	}
	raw, _ := json.Marshal(peers)
	pf := filepath.Join(t.TempDir(), "peers.json")
	if err := os.WriteFile(pf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	lock := t.TempDir()
	ca := netConf(t, version, "bti-vx", "vxlan", a.Uplink, "198.18.64.0/24",
		map[string]any{"peersFile": pf, "nodeName": "bti-a", "lockDir": lock})
	cb := netConf(t, version, "bti-vx", "vxlan", b.Uplink, "198.18.65.0/24",
		map[string]any{"peersFile": pf, "nodeName": "bti-b", "lockDir": lock})
	return ca, cb
}

// TestVXLANAcrossNodes attaches pods on two node namespaces joined only by a
// veth underlay: same-node and cross-node traffic must flow, the latter
// through VNI 1's VXLAN device with FDB and neighbour entries per peer.
func TestVXLANAcrossNodes(t *testing.T) {
	requireRoot(t)
	a, b := newVXLANPair(t)
	ca, cb := vxlanConfs(t, a, b, "1.1.0")
	beforeA, beforeB := a.links(t), b.links(t)

	a1, a2 := a.add(t, ca), a.add(t, ca)
	b1 := b.add(t, cb)

	for _, tc := range []struct {
		name     string
		from, to pod
	}{
		{"same node", a1, a2},
		{"same node back", a2, a1},
		{"cross node", a1, b1},
		{"cross node back", b1, a2},
	} {
		if err := tc.from.ns.ping(tc.to.ip()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// The overlay state the plugin programmed on node a for node b.
	if got := a.ip(t, "-d", "link", "show", "berth.1"); !strings.Contains(got, "vxlan id 1") {
		t.Errorf("berth.1 is not VNI 1:\n%s", got)
	}
	if got := a.ip(t, "route", "show", "198.18.65.0/24"); !strings.Contains(got, "dev berth.1") {
		t.Errorf("no route to node b's pod CIDR via berth.1: %q", got)
	}
	if got := run(t, "bridge", "-n", a.Name, "fdb", "show", "dev", "berth.1"); !strings.Contains(got, "dst 198.18.0.2") {
		t.Errorf("no FDB entry for node b's VTEP:\n%s", got)
	}
	if got := a.ip(t, "neigh", "show", "dev", "berth.1"); !strings.Contains(got, "198.18.65.0") {
		t.Errorf("no neighbour entry for node b's VTEP address:\n%s", got)
	}

	for _, p := range []pod{a1, a2} {
		if err := a.check(t, ca, p); err != nil {
			t.Errorf("CHECK %s: %v", p.id, err)
		}
	}
	if err := b.check(t, cb, b1); err != nil {
		t.Errorf("CHECK %s: %v", b1.id, err)
	}
	// The wrong node's configuration must not validate.
	if err := a.check(t, ca, pod{ns: b1.ns, id: b1.id, ifName: "eth0", raw: b1.raw}); err == nil {
		t.Error("CHECK of node b's pod against node a passed")
	}

	for _, p := range []pod{a1, a2} {
		a.del(t, ca, p)
	}
	b.del(t, cb, b1)
	for _, p := range []pod{a1, a2, b1} {
		if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
			t.Errorf("pod links after DEL: %v", got)
		}
	}
	// The VXLAN device is node infrastructure and stays; pod veths go.
	afterA := a.links(t)
	if !slices.Equal(afterA, append(slices.Clone(beforeA), "berth.1")) {
		t.Errorf("node a links: before %v after %v", beforeA, afterA)
	}
	if afterB := b.links(t); !slices.Equal(afterB, append(slices.Clone(beforeB), "berth.1")) {
		t.Errorf("node b links: before %v after %v", beforeB, afterB)
	}
	if got := a.ip(t, "route", "show", "198.18.64.0/24", "proto", "kernel"); got != "" {
		t.Errorf("stray subnet route on node a: %q", got)
	}
	for _, c := range [][]byte{ca, cb} {
		if got := allocations(t, dataDirOf(t, c), "bti-vx"); len(got) != 0 {
			t.Errorf("allocations left: %v", got)
		}
	}
}
