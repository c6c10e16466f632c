package overlay

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/cni/overlay/overlaytest"
)

// forTenant returns a view of node n whose device is the one of the tenant
// with the given registry index (VNI base: the node's own device's VNI).
func (n *node) forTenant(index uint32) *node {
	c := *n
	d := TenantDevice(*n.dev, n.dev.VNI, index)
	c.dev = &d
	return &c
}

// routesIn lists the non-kernel routes on device dev in table (0 = main) as
// "<dst> via <gw>".
func (n *node) routesIn(t *testing.T, dev string, table int) []string {
	t.Helper()
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	var out []string
	n.Do(t, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: l.Attrs().Index, Table: table}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Protocol != unix.RTPROT_KERNEL {
				out = append(out, fmt.Sprintf("%s via %s", prefixFrom(r.Dst), addrOf(r.Gw)))
			}
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// counters reads tx and rx packets of every device view.
func counters(t *testing.T, devs []*node) [][2]uint64 {
	t.Helper()
	out := make([][2]uint64, len(devs))
	for i, d := range devs {
		tx, rx := vxlanCounters(t, d)
		out[i] = [2]uint64{tx, rx}
	}
	return out
}

// TestTenantOverlays builds two nodes with two tenants each: the default
// tenant (index 0, berth.1, main table) and tenant 1 (berth.2, table 10001,
// its pods steered there by an ip rule as the CNI plugin does). Same-tenant
// traffic must cross the nodes for both tenants, on the tenant's own VNI.
func TestTenantOverlays(t *testing.T) {
	n1, n2 := newCluster(t)
	peers := []Peer{n1.peer(), n2.peer()}
	n1d, n1t, n2d, n2t := n1.forTenant(0), n1.forTenant(1), n2.forTenant(0), n2.forTenant(1)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []*node{n1, n2} {
				for _, args := range [][]string{{"rule", "show"}, {"route", "show", "table", "10001"}} {
					out, _ := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
					t.Logf("ip %s (%s):\n%s", strings.Join(args, " "), n.name, out)
				}
				out, _ := exec.Command("bridge", "-n", n.Name, "fdb", "show", "dev", "berth.2").CombinedOutput()
				t.Logf("bridge fdb show dev berth.2 (%s):\n%s", n.name, out)
			}
		}
	})

	for _, n := range []*node{n1d, n1t, n2d, n2t} {
		if st := n.reconcile(t, peers); st != (Stats{Added: 3, Peers: 1}) {
			t.Errorf("%s %s first reconcile = %+v, want 3 added for 1 peer", n.name, n.dev.Name(), st)
		}
	}
	for _, tc := range []struct {
		n       *node
		remote  Peer
		vni     int
		table   int
		wantDev string
	}{
		{n1d, n2.peer(), 1, 0, "berth.1"},
		{n1t, n2.peer(), 2, 10001, "berth.2"},
		{n2d, n1.peer(), 1, 0, "berth.1"},
		{n2t, n1.peer(), 2, 10001, "berth.2"},
	} {
		if tc.n.dev.Name() != tc.wantDev {
			t.Fatalf("device %s, want %s", tc.n.dev.Name(), tc.wantDev)
		}
		s := tc.n.snapshot(t)
		if s.link.VxlanId != tc.vni {
			t.Errorf("%s %s VNI = %d, want %d", tc.n.name, tc.wantDev, s.link.VxlanId, tc.vni)
		}
		// Routes in the tenant's table, neighbour and FDB (with the
		// tenant VNI's MAC) on its device.
		tc.n.checkRemotes(t, tc.remote)
		cidr := netip.MustParsePrefix(tc.remote.PodCIDR)
		want := []string{fmt.Sprintf("%s via %s", cidr, cidr.Addr())}
		if got := tc.n.routesIn(t, tc.wantDev, tc.table); !slices.Equal(got, want) {
			t.Errorf("%s routes on %s in table %d = %q, want %q", tc.n.name, tc.wantDev, tc.table, got, want)
		}
		// And nothing in the other tenant's table.
		other := 10001
		if tc.table != 0 {
			other = 0
		}
		if got := tc.n.routesIn(t, tc.wantDev, other); len(got) != 0 {
			t.Errorf("%s %s has routes in table %d: %q", tc.n.name, tc.wantDev, other, got)
		}
	}
	for _, n := range []*node{n1d, n1t, n2d, n2t} {
		if st := n.reconcile(t, peers); st.Added != 0 || st.Removed != 0 {
			t.Errorf("%s %s second reconcile = %+v, want no changes", n.name, n.dev.Name(), st)
		}
	}

	// One pod per tenant per node; tenant 1's pods look up table 10001.
	podA1 := addTenantPod(t, n1, "pod0", "198.18.64.2", TableFor(0))
	podB1 := addTenantPod(t, n1, "pod1", "198.18.64.3", TableFor(1))
	podA2 := addTenantPod(t, n2, "pod0", "198.18.65.2", TableFor(0))
	podB2 := addTenantPod(t, n2, "pod1", "198.18.65.3", TableFor(1))
	for _, p := range []struct {
		ns   *overlaytest.NetNS
		addr string
	}{{podA1, "198.18.64.2"}, {podB1, "198.18.64.3"}, {podA2, "198.18.65.2"}, {podB2, "198.18.65.3"}} {
		echoServer(t, p.ns, p.addr+":7777")
	}

	// Each exchange is three TCP echoes and three pings there and back,
	// so the devices that carry it count well over minPackets each way,
	// while the other tenant's devices must stay (nearly) silent.
	const minPackets = 10
	devs := []*node{n1d, n2d, n1t, n2t}
	for _, tc := range []struct {
		name     string
		from     *overlaytest.NetNS
		fromAddr string
		to       string
		on       []int // indexes into devs that must carry the traffic
	}{
		{"default tenant n1 -> n2", podA1, "198.18.64.2", "198.18.65.2", []int{0, 1}},
		{"default tenant n2 -> n1", podA2, "198.18.65.2", "198.18.64.2", []int{0, 1}},
		{"tenant 1 n1 -> n2", podB1, "198.18.64.3", "198.18.65.3", []int{2, 3}},
		{"tenant 1 n2 -> n1", podB2, "198.18.65.3", "198.18.64.3", []int{2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counters(t, devs)
			for range 3 {
				if err := tcpEcho(tc.from, tc.to+":7777"); err != nil {
					t.Fatalf("TCP echo %s -> %s: %v", tc.fromAddr, tc.to, err)
				}
			}
			if out, err := tc.from.Exec("ping", "-c", "3", "-i", "0.2", "-W", "1", tc.to); err != nil {
				t.Fatalf("ping %s -> %s: %v\n%s", tc.fromAddr, tc.to, err, out)
			}
			after := counters(t, devs)
			for i, d := range devs {
				dtx, drx := after[i][0]-before[i][0], after[i][1]-before[i][1]
				if slices.Contains(tc.on, i) {
					if dtx < minPackets || drx < minPackets {
						t.Errorf("%s %s carried tx %d rx %d packets, want at least %d each way", d.name, d.dev.Name(), dtx, drx, minPackets)
					}
				} else if dtx+drx >= minPackets/2 {
					t.Errorf("%s %s (other tenant) carried tx %d rx %d packets, want none of this traffic", d.name, d.dev.Name(), dtx, drx)
				}
			}
		})
	}

	// The node reaches a tenant pod through the main table (berth.1); the
	// pod's replies take its tenant's table (berth.2), which works with
	// rp_filter off or loose, the usual node settings.
	if err := tcpEcho(n1.NetNS, "198.18.65.3:7777"); err != nil {
		t.Errorf("node n1 -> tenant 1 pod on n2: %v", err)
	}

	// A stale route in the tenant table is pruned; a route in another
	// table, the default tenant's device's route in this table and a
	// foreign device's route in this table stay.
	n1.IP(t, "route", "add", "198.18.99.0/24", "via", "198.18.99.0", "dev", "berth.2", "onlink", "table", "10001")
	n1.IP(t, "route", "add", "198.18.98.0/24", "via", "198.18.98.0", "dev", "berth.2", "onlink", "table", "10002")
	n1.IP(t, "route", "add", "198.18.97.0/24", "via", "198.18.97.0", "dev", "berth.1", "onlink", "table", "10001")
	n1.IP(t, "route", "add", "198.18.96.0/24", "via", "198.18.0.2", "dev", "u0", "table", "10001")
	if st := n1t.reconcile(t, peers); st != (Stats{Removed: 1, Peers: 1}) {
		t.Errorf("tenant 1 reconcile with a stale route = %+v, want 1 removed", st)
	}
	if st := n1d.reconcile(t, peers); st.Added != 0 || st.Removed != 0 {
		t.Errorf("default tenant reconcile = %+v, want no changes (its table is main)", st)
	}
	n1t.checkRemotes(t, n2.peer())
	table := n1.IP(t, "route", "show", "table", "10001")
	for _, want := range []string{"198.18.65.0/24 via 198.18.65.0 dev berth.2 onlink", "198.18.97.0/24 via 198.18.97.0 dev berth.1 onlink", "198.18.96.0/24 via 198.18.0.2 dev u0"} {
		if !strings.Contains(table, want) {
			t.Errorf("table 10001 lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "198.18.99.0") {
		t.Errorf("stale route 198.18.99.0/24 survived in table 10001:\n%s", table)
	}
	if out := n1.IP(t, "route", "show", "table", "10002"); !strings.Contains(out, "198.18.98.0/24") {
		t.Errorf("route in table 10002 was touched:\n%s", out)
	}

	// A peer leaving is removed from every tenant's device.
	for _, n := range []*node{n1d, n1t} {
		if st := n.reconcile(t, []Peer{n1.peer()}); st != (Stats{Removed: 3}) {
			t.Errorf("%s reconcile without n2 = %+v, want 3 removed", n.dev.Name(), st)
		}
		n.checkRemotes(t)
	}
	if err := tcpEcho(podB1, "198.18.65.3:7777"); err == nil {
		t.Error("tenant 1 pod on n1 still reaches its peer on n2 after n2 was removed")
	}
}
