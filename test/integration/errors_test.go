package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestADDErrors feeds bad input and bad environments and expects the spec's
// error code, a message naming the field, and nothing left behind.
func TestADDErrors(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	good := func() []byte { return netConf(t, "1.1.0", "bti-err", "macvlan", n.Uplink, "198.18.14.0/24", nil) }
	tests := []struct {
		name  string
		conf  []byte
		code  uint
		field string
	}{
		{"invalid json", []byte(`{"cniVersion":"1.1.0","name":`), 6, ""},
		{"unknown mode", setJSON(t, good(), "mode", "tunnel"), 7, "mode"},
		{"absent master", setJSON(t, good(), "master", "btinothere"), 7, "master"},
		// The node has no default route to take a master from.
		{"missing master", setJSON(t, good(), "master", ""), 7, "master"},
		{"bad cidr", setJSON(t, good(), "ipam", map[string]any{"subnet": "198.18.14.0/40", "dataDir": t.TempDir()}), 7, "ipam.subnet"},
		{"unsupported version", setJSON(t, good(), "cniVersion", "0.2.0"), 1, ""},
		{"exhausted subnet", nil, 110, "ipam"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.conf
			if tc.code == 110 {
				// A /30 has one usable address besides the gateway.
				conf = setJSON(t, good(), "ipam", map[string]any{"subnet": "198.18.14.0/30", "dataDir": t.TempDir()})
				n.add(t, conf)
			}
			p := pod{ns: newNS(t, "e"), id: "ctr-err", ifName: "eth0"}
			before := n.links(t)
			_, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
			wantCode(t, err, tc.code, tc.field)
			if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("failed ADD left pod links: %v", got)
			}
			if got := n.links(t); !slices.Equal(got, before) {
				t.Errorf("failed ADD changed node links: %v -> %v", before, got)
			}
		})
	}
}

// TestFailedADDRollsBack makes link creation fail after the address was
// allocated (the pod already has an eth0) and expects the address freed.
func TestFailedADDRollsBack(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	conf := netConf(t, "1.1.0", "bti-rb", "macvlan", n.Uplink, "198.18.15.0/24", nil)
	p := pod{ns: newNS(t, "r"), id: "ctr-rb", ifName: "eth0"}
	p.ns.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "btirbpeer")
	_, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
	wantCode(t, err, 101, "macvlan")
	if got := allocations(t, dataDirOf(t, conf), "bti-rb"); len(got) != 0 {
		t.Errorf("failed ADD kept allocations: %v", got)
	}
	// The pre-existing eth0 is not ours: rollback must leave it alone.
	if got := p.ns.ip(t, "-d", "link", "show", "eth0"); !strings.Contains(got, "veth") {
		t.Errorf("pod eth0 is not the original veth:\n%s", got)
	}
}

// TestDELIdempotent: DEL succeeds when the netns, the link or the
// allocation is already gone, and when repeated.
func TestDELIdempotent(t *testing.T) {
	requireRoot(t)
	for _, m := range modes()[:2] {
		t.Run(m.mode, func(t *testing.T) {
			n, conf := m.setup(t)
			p := n.add(t, conf)
			n.del(t, conf, p)
			n.del(t, conf, p) // twice

			p2 := n.add(t, conf)
			run(t, "ip", "netns", "del", p2.ns.Name) // netns gone
			n.del(t, conf, p2)

			// No CNI_NETNS at all, as runtimes send after a crash.
			if _, err := n.invoke(cniCall{Command: "DEL", ContainerID: "never-added", IfName: "eth0", Conf: conf}); err != nil {
				t.Errorf("DEL without netns: %v", err)
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-cyc"); len(got) != 0 {
				t.Errorf("allocations left: %v", got)
			}
		})
	}
}

// TestSTATUS covers the healthy case and both code-50 causes.
func TestSTATUS(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	good := netConf(t, "1.1.0", "bti-st", "macvlan", n.Uplink, "198.18.16.0/24", nil)
	tests := []struct {
		name  string
		conf  []byte
		code  uint
		field string
	}{
		{"healthy", good, 0, ""},
		{"master missing", setJSON(t, good, "master", "btigone"), 50, "master"},
		{"dataDir not writable", setJSON(t, good, "ipam", map[string]any{"subnet": "198.18.16.0/24", "dataDir": filepath.Join(notDir, "sub")}), 50, "ipam.dataDir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := n.invoke(cniCall{Command: "STATUS", Conf: tc.conf})
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				// The shaping path chosen for this kernel is reported.
				if !strings.Contains(string(out), `"shaping":"htb"`) && !strings.Contains(string(out), `"shaping":"edt-fq"`) {
					t.Errorf("STATUS does not report the dataplane path: %q", out)
				}
				return
			}
			wantCode(t, err, tc.code, tc.field)
		})
	}
}

// TestGC releases every allocation (and vxlan host veth) whose attachment is
// not listed as valid, and keeps the listed ones working.
func TestGC(t *testing.T) {
	requireRoot(t)
	for _, m := range modes()[:2] {
		t.Run(m.mode, func(t *testing.T) {
			n, conf := m.setup(t)
			keep, drop1, drop2 := n.add(t, conf), n.add(t, conf), n.add(t, conf)
			gcConf := setJSON(t, conf, "cni.dev/valid-attachments", []map[string]string{
				{"containerID": keep.id, "ifname": "eth0"},
			})
			if _, err := n.invoke(cniCall{Command: "GC", Conf: gcConf}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			got := allocations(t, dataDirOf(t, conf), "bti-cyc")
			if len(got) != 1 || got[0] != keep.ip() {
				t.Errorf("allocations after GC = %v, want only %s", got, keep.ip())
			}
			if err := n.check(t, conf, keep); err != nil {
				t.Errorf("CHECK of the kept pod after GC: %v", err)
			}
			if m.mode == "vxlan" {
				for _, p := range []pod{drop1, drop2} {
					if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
						t.Errorf("GC left the stale veth in %s: %v", p.id, got)
					}
				}
			}
			// A later DEL of a collected attachment is still fine.
			n.del(t, conf, drop1)
			n.del(t, conf, drop2)
			n.del(t, conf, keep)
		})
	}
}
