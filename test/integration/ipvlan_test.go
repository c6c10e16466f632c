package integration

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// ipvlanSupported probes the running kernel by creating an ipvlan child of
// the node's uplink in the node namespace.
func ipvlanSupported(t *testing.T, n node) (bool, string) {
	t.Helper()
	out, err := n.exec("ip", "link", "add", "btiprobe", "link", n.Uplink, "type", "ipvlan", "mode", "l2").CombinedOutput()
	if err != nil {
		return false, strings.TrimSpace(string(out))
	}
	_ = n.exec("ip", "link", "del", "btiprobe").Run()
	return true, ""
}

func skipWithoutIPvlan(t *testing.T, n node) {
	t.Helper()
	if ok, why := ipvlanSupported(t, n); !ok {
		t.Skipf("kernel has no ipvlan support (CONFIG_IPVLAN): probe said %q", why)
	}
}

// TestIPvlanLifecycle is the macvlan scenario for ipvlan in every mode.
func TestIPvlanLifecycle(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"l2", "l3", "l3s"} {
		t.Run(mode, func(t *testing.T) {
			n := newMacvlanNode(t)
			skipWithoutIPvlan(t, n)
			before := n.links(t)
			conf := netConf(t, "1.1.0", "bti-iv", "ipvlan", n.Uplink, "198.18.13.0/24", map[string]any{"ipvlanMode": mode})
			p1, p2 := n.add(t, conf), n.add(t, conf)
			if err := p1.ns.ping(p2.ip()); err != nil {
				t.Error(err)
			}
			if err := p2.ns.ping(p1.ip()); err != nil {
				t.Error(err)
			}
			for _, p := range []pod{p1, p2} {
				if err := n.check(t, conf, p); err != nil {
					t.Errorf("CHECK: %v", err)
				}
				n.del(t, conf, p)
				if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
					t.Errorf("pod links after DEL: %v", got)
				}
			}
			if got := allocations(t, dataDirOf(t, conf), "bti-iv"); len(got) != 0 {
				t.Errorf("allocations left: %v", got)
			}
			if after := n.links(t); !slices.Equal(before, after) {
				t.Errorf("node links changed: %v -> %v", before, after)
			}
		})
	}
}

// TestIPvlanUnsupportedKernel runs only where ipvlan is missing: ADD must
// fail with berth's kernel-support code, name ipvlan, and leave no address
// or link behind; STATUS must report the network unavailable.
func TestIPvlanUnsupportedKernel(t *testing.T) {
	requireRoot(t)
	n := newMacvlanNode(t)
	if ok, _ := ipvlanSupported(t, n); ok {
		t.Skip("kernel supports ipvlan; the unsupported-kernel path cannot be exercised here")
	}
	conf := netConf(t, "1.1.0", "bti-iv", "ipvlan", n.Uplink, "198.18.13.0/24", nil)
	p := pod{ns: newNS(t, "p"), id: "ctr-iv", ifName: "eth0"}
	_, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
	wantCode(t, err, 100, "ipvlan")
	var ce *cniError
	if errors.As(err, &ce) && !strings.Contains(ce.Msg, "CONFIG_IPVLAN") {
		t.Errorf("message does not name the kernel option: %q", ce.Msg)
	}
	if got := allocations(t, dataDirOf(t, conf), "bti-iv"); len(got) != 0 {
		t.Errorf("failed ADD left allocations: %v", got)
	}
	if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("failed ADD left links: %v", got)
	}
	_, err = n.invoke(cniCall{Command: "STATUS", Conf: conf})
	wantCode(t, err, 50, "ipvlan")
	// DEL after a failed ADD must still succeed.
	if _, err := n.invoke(cniCall{Command: "DEL", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf}); err != nil {
		t.Errorf("DEL after failed ADD: %v", err)
	}
}
