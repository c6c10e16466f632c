package integration

import (
	"strings"
	"testing"
)

// TestMasterAndMTUDefaults: with no "master", the link carrying the default
// route is the parent; with no "mtu", the pod gets the master's MTU, less 50
// for VXLAN.
func TestMasterAndMTUDefaults(t *testing.T) {
	requireRoot(t)
	t.Run("macvlan", func(t *testing.T) {
		n := newMacvlanNode(t)
		n.ip(t, "link", "set", n.Uplink, "mtu", "9000")
		n.ip(t, "addr", "add", "198.18.31.1/24", "dev", n.Uplink)
		n.ip(t, "route", "add", "default", "via", "198.18.31.254", "dev", n.Uplink)
		conf := netConf(t, "1.1.0", "bti-def", "macvlan", "", "198.18.32.0/24", nil)
		p := n.add(t, conf)
		defer n.del(t, conf, p)
		got := p.ns.ip(t, "-d", "link", "show", "eth0")
		if !strings.Contains(got, "mtu 9000") || !strings.Contains(got, "macvlan") {
			t.Errorf("pod link is not a 9000-MTU macvlan:\n%s", got)
		}
		// CHECK resolves the default master again and compares parents.
		if err := n.check(t, conf, p); err != nil {
			t.Errorf("CHECK: %v", err)
		}
	})
	t.Run("vxlan", func(t *testing.T) {
		a, b := newVXLANPair(t)
		a.ip(t, "route", "add", "default", "via", "198.18.0.254", "dev", a.Uplink)
		ca, _ := vxlanConfs(t, a, b, "1.1.0")
		ca = setJSON(t, ca, "master", "")
		p := a.add(t, ca)
		defer a.del(t, ca, p)
		if got := p.ns.ip(t, "link", "show", "eth0"); !strings.Contains(got, "mtu 1450") {
			t.Errorf("vxlan pod MTU is not 1500-50:\n%s", got)
		}
		if got := a.ip(t, "-d", "link", "show", "berth.1"); !strings.Contains(got, "mtu 1450") || !strings.Contains(got, "dev "+a.Uplink) {
			t.Errorf("VXLAN device not on the default-route link with MTU 1450:\n%s", got)
		}
	})
}
