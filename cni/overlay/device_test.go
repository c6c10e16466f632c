package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/cni/overlay/overlaytest"
)

// The integration tests below build two simulated nodes, each in its own
// network namespace, joined by a veth pair that plays the underlay:
//
//	bon-n1-*: u0 198.18.0.1/24  <-veth->  bon-n2-*: u0 198.18.0.2/24
//	          pod CIDR 198.18.64.0/24               pod CIDR 198.18.65.0/24
//
// 198.18.0.0/15 is reserved for benchmarking (RFC 2544), so the addresses
// cannot collide with anything real, and nothing leaves the namespaces.

// node is one simulated node.
type node struct {
	*overlaytest.NetNS
	name     string
	underlay netip.Addr
	podCIDR  netip.Prefix
	dev      *Device
}

func (n *node) peer() Peer {
	return Peer{NodeName: n.name, UnderlayIP: n.underlay.String(), PodCIDR: n.podCIDR.String()}
}

// reconcile runs Reconcile inside the node's namespace.
func (n *node) reconcile(t *testing.T, peers []Peer) Stats {
	t.Helper()
	var st Stats
	n.Do(t, func() error {
		var err error
		st, err = n.dev.Reconcile(peers, n.name)
		return err
	})
	return st
}

// newCluster builds the two-node topology. The nodes share a lock directory,
// as they would share /run/berth if they were processes on one host.
func newCluster(t *testing.T) (n1, n2 *node) {
	t.Helper()
	overlaytest.RequireRoot(t)
	a := overlaytest.NewNetNS(t, "n1")
	b := overlaytest.NewNetNS(t, "n2")
	overlaytest.Veth(t, a, "u0", "198.18.0.1/24", b, "u0", "198.18.0.2/24")
	lockDir := t.TempDir()
	mk := func(ns *overlaytest.NetNS, name, underlay, cidr string) *node {
		n := &node{NetNS: ns, name: name, underlay: netip.MustParseAddr(underlay), podCIDR: netip.MustParsePrefix(cidr)}
		n.dev = &Device{VNI: 1, LocalIP: n.underlay, PodCIDR: n.podCIDR, LockDir: lockDir, Logger: testLogger(t)}
		t.Cleanup(func() {
			if t.Failed() {
				n.dumpState(t)
			}
		})
		return n
	}
	return mk(a, "n1", "198.18.0.1", "198.18.64.0/24"), mk(b, "n2", "198.18.0.2", "198.18.65.0/24")
}

// dumpState logs the node's overlay state in iproute2's words, to make a
// failure readable.
func (n *node) dumpState(t *testing.T) {
	for _, args := range [][]string{
		{"ip", "-n", n.Name, "-d", "link", "show"},
		{"ip", "-n", n.Name, "addr", "show"},
		{"ip", "-n", n.Name, "route", "show"},
		{"ip", "-n", n.Name, "neigh", "show"},
		{"bridge", "-n", n.Name, "fdb", "show", "dev", n.dev.Name()},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		t.Logf("%s (%s): %v\n%s", strings.Join(args, " "), n.name, err, out)
	}
}

// state is a snapshot of everything Reconcile manages on a node.
type state struct {
	link   *netlink.Vxlan
	addrs  []netip.Prefix
	routes []string // "<dst> via <gw> onlink" for routes on the device in its table
	neighs []string // "<ip> <mac>" for permanent neighbours on the device
	fdb    []string // "<mac> <dst>" for FDB entries with a destination
}

func (n *node) snapshot(t *testing.T) state {
	t.Helper()
	var s state
	n.Do(t, func() error {
		l, err := netlink.LinkByName(n.dev.Name())
		if err != nil {
			return err
		}
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			return fmt.Errorf("%s is a %s", n.dev.Name(), l.Type())
		}
		s.link = vx
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.Scope == int(netlink.SCOPE_UNIVERSE) {
				s.addrs = append(s.addrs, prefixFrom(a.IPNet))
			}
		}
		// The device's own table only (main unless Table is set).
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: l.Attrs().Index, Table: n.dev.table()},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Protocol == unix.RTPROT_KERNEL {
				continue
			}
			desc := fmt.Sprintf("%s via %s", prefixFrom(r.Dst), addrOf(r.Gw))
			if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
				desc += " onlink"
			}
			s.routes = append(s.routes, desc)
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			neighs, err := netlink.NeighList(l.Attrs().Index, fam)
			if err != nil {
				return err
			}
			for _, nb := range neighs {
				if nb.State&netlink.NUD_PERMANENT != 0 {
					s.neighs = append(s.neighs, fmt.Sprintf("%s %s", addrOf(nb.IP), nb.HardwareAddr))
				}
			}
		}
		fdb, err := netlink.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, e := range fdb {
			if e.IP != nil {
				s.fdb = append(s.fdb, fmt.Sprintf("%s %s", e.HardwareAddr, addrOf(e.IP)))
			}
		}
		return nil
	})
	slices.Sort(s.routes)
	slices.Sort(s.neighs)
	slices.Sort(s.fdb)
	return s
}

// wantEntries is the state Reconcile must program for the given remotes.
func wantEntries(vni uint32, remotes ...Peer) (routes, neighs, fdb []string) {
	for _, p := range remotes {
		cidr := netip.MustParsePrefix(p.PodCIDR)
		ip := netip.MustParseAddr(p.UnderlayIP)
		mac := MACFor(vni, ip)
		routes = append(routes, fmt.Sprintf("%s via %s onlink", cidr, cidr.Addr()))
		neighs = append(neighs, fmt.Sprintf("%s %s", cidr.Addr(), mac))
		fdb = append(fdb, fmt.Sprintf("%s %s", mac, ip))
	}
	slices.Sort(routes)
	slices.Sort(neighs)
	slices.Sort(fdb)
	return routes, neighs, fdb
}

// checkRemotes asserts that exactly the given remotes are programmed.
func (n *node) checkRemotes(t *testing.T, remotes ...Peer) {
	t.Helper()
	s := n.snapshot(t)
	routes, neighs, fdb := wantEntries(n.dev.VNI, remotes...)
	if !slices.Equal(s.routes, routes) {
		t.Errorf("%s routes on %s:\n got %q\nwant %q", n.name, n.dev.Name(), s.routes, routes)
	}
	if !slices.Equal(s.neighs, neighs) {
		t.Errorf("%s neighbours on %s:\n got %q\nwant %q", n.name, n.dev.Name(), s.neighs, neighs)
	}
	if !slices.Equal(s.fdb, fdb) {
		t.Errorf("%s FDB of %s:\n got %q\nwant %q", n.name, n.dev.Name(), s.fdb, fdb)
	}
}

func (n *node) linkIndex(t *testing.T, name string) int {
	t.Helper()
	var idx int
	n.Do(t, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		return nil
	})
	return idx
}

func TestReconcileTwoNodes(t *testing.T) {
	n1, n2 := newCluster(t)
	peers := []Peer{n1.peer(), n2.peer()}

	if st := n1.reconcile(t, peers); st != (Stats{Added: 3, Peers: 1}) {
		t.Errorf("n1 first reconcile = %+v, want 3 added for 1 peer", st)
	}
	if st := n2.reconcile(t, peers); st != (Stats{Added: 3, Peers: 1}) {
		t.Errorf("n2 first reconcile = %+v, want 3 added for 1 peer", st)
	}

	// The device itself.
	for _, n := range []*node{n1, n2} {
		s := n.snapshot(t)
		vx := s.link
		if vx.VxlanId != 1 || vx.Port != DefaultPort || vx.Learning || !vx.SrcAddr.Equal(ipOf(n.underlay)) {
			t.Errorf("%s device: id=%d port=%d learning=%t local=%s, want 1/4789/false/%s",
				n.name, vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, n.underlay)
		}
		if want := n.linkIndex(t, "u0"); vx.VtepDevIndex != want {
			t.Errorf("%s device parent index = %d, want u0 (%d)", n.name, vx.VtepDevIndex, want)
		}
		if vx.MTU != 1500-50 {
			t.Errorf("%s device MTU = %d, want 1450", n.name, vx.MTU)
		}
		if want := MACFor(1, n.underlay); vx.HardwareAddr.String() != want.String() {
			t.Errorf("%s device MAC = %s, want MACFor = %s", n.name, vx.HardwareAddr, want)
		}
		if vx.Flags&net.FlagUp == 0 {
			t.Errorf("%s device is down", n.name)
		}
		if want := []netip.Prefix{netip.PrefixFrom(n.podCIDR.Addr(), 32)}; !slices.Equal(s.addrs, want) {
			t.Errorf("%s device addresses = %v, want %v", n.name, s.addrs, want)
		}
	}
	// Each node routes the other's pod CIDR, never its own.
	n1.checkRemotes(t, n2.peer())
	n2.checkRemotes(t, n1.peer())

	// Idempotent.
	if st := n1.reconcile(t, peers); st.Added != 0 || st.Removed != 0 {
		t.Errorf("second reconcile = %+v, want no changes", st)
	}

	// A third node joins, then leaves again.
	n3 := Peer{NodeName: "n3", UnderlayIP: "198.18.0.3", PodCIDR: "198.18.66.0/24"}
	if st := n1.reconcile(t, append(peers, n3)); st != (Stats{Added: 3, Peers: 2}) {
		t.Errorf("reconcile with n3 = %+v, want 3 added", st)
	}
	n1.checkRemotes(t, n2.peer(), n3)
	if st := n1.reconcile(t, peers); st != (Stats{Removed: 3, Peers: 1}) {
		t.Errorf("reconcile without n3 = %+v, want 3 removed", st)
	}
	n1.checkRemotes(t, n2.peer())
	if st := n1.reconcile(t, peers); st.Added != 0 || st.Removed != 0 {
		t.Errorf("reconcile after removal = %+v, want no changes", st)
	}

	// A peer that changes its underlay IP gets its FDB entry and MAC moved.
	moved := Peer{NodeName: "n2", UnderlayIP: "198.18.0.22", PodCIDR: "198.18.65.0/24"}
	st := n1.reconcile(t, []Peer{n1.peer(), moved})
	if st.Added != 2 || st.Removed != 1 {
		// New FDB entry (new MAC) and replaced neighbour; old FDB entry removed.
		t.Errorf("reconcile with moved n2 = %+v, want 2 added 1 removed", st)
	}
	n1.checkRemotes(t, moved)

	// An empty peer list removes everything but keeps the device.
	if st := n1.reconcile(t, nil); st != (Stats{Removed: 3}) {
		t.Errorf("reconcile with no peers = %+v, want 3 removed", st)
	}
	n1.checkRemotes(t)
}

// TestReconcilePrunesOnlyItsOwnState plants stale and wrong entries on the
// device and unrelated ones elsewhere: the former must go or be fixed, the
// latter must stay.
func TestReconcilePrunesOnlyItsOwnState(t *testing.T) {
	n1, n2 := newCluster(t)
	peers := []Peer{n1.peer(), n2.peer()}
	n1.reconcile(t, peers)
	dev := n1.dev.Name()

	// Stale entries on our device.
	n1.IP(t, "route", "add", "198.18.99.0/24", "via", "198.18.99.0", "dev", dev, "onlink")
	n1.IP(t, "route", "add", "198.18.98.0/24", "dev", dev)
	n1.IP(t, "neigh", "add", "198.18.99.0", "lladdr", "02:00:00:00:00:99", "dev", dev, "nud", "permanent")
	overlaytest.IP(t, "-n", n1.Name, "link", "set", dev, "up")
	if out, err := exec.Command("bridge", "-n", n1.Name, "fdb", "append", "02:00:00:00:00:99", "dst", "198.18.0.99", "dev", dev, "self", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb append: %v: %s", err, out)
	}
	// A default (all-zeros) destination, which would flood unknown
	// traffic to an arbitrary host, and a wrong MAC for a wanted gateway.
	if out, err := exec.Command("bridge", "-n", n1.Name, "fdb", "append", "00:00:00:00:00:00", "dst", "198.18.0.98", "dev", dev, "self", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb append: %v: %s", err, out)
	}
	n1.IP(t, "neigh", "replace", "198.18.65.0", "lladdr", "02:00:00:00:00:65", "dev", dev, "nud", "permanent")
	// And a wrong destination for a wanted MAC.
	if out, err := exec.Command("bridge", "-n", n1.Name, "fdb", "replace", MACFor(1, n2.underlay).String(), "dst", "198.18.0.98", "dev", dev, "self", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb replace: %v: %s", err, out)
	}

	// State on other links that must survive.
	n1.IP(t, "route", "add", "198.18.97.0/24", "via", "198.18.0.2", "dev", "u0")
	n1.IP(t, "neigh", "add", "198.18.0.97", "lladdr", "02:00:00:00:00:97", "dev", "u0", "nud", "permanent")

	st := n1.reconcile(t, peers)
	// Removed: 2 routes, 1 neighbour, 2 FDB entries. Added (corrected in
	// place): the neighbour and the FDB entry of n2.
	if st.Added != 2 || st.Removed != 5 {
		t.Errorf("reconcile = %+v, want 2 added 5 removed", st)
	}
	n1.checkRemotes(t, n2.peer())

	routes := n1.IP(t, "route", "show", "dev", "u0")
	if !strings.Contains(routes, "198.18.97.0/24 via 198.18.0.2") {
		t.Errorf("route on u0 was touched; routes on u0:\n%s", routes)
	}
	neighs := n1.IP(t, "neigh", "show", "dev", "u0")
	if !strings.Contains(neighs, "198.18.0.97 lladdr 02:00:00:00:00:97") {
		t.Errorf("neighbour on u0 was touched; neighbours on u0:\n%s", neighs)
	}
	if st := n1.reconcile(t, peers); st.Added != 0 || st.Removed != 0 {
		t.Errorf("reconcile after cleanup = %+v, want no changes", st)
	}
}

func TestEnsureRepairsDevice(t *testing.T) {
	n1, n2 := newCluster(t)
	peers := []Peer{n1.peer(), n2.peer()}
	n1.reconcile(t, peers)
	dev := n1.dev.Name()

	// Mutable drift is fixed in place: the device keeps its index.
	before := n1.linkIndex(t, dev)
	n1.IP(t, "link", "set", dev, "down")
	n1.IP(t, "link", "set", dev, "mtu", "1300")
	n1.IP(t, "link", "set", dev, "address", "02:00:00:00:00:01")
	n1.IP(t, "addr", "add", "198.18.64.77/32", "dev", dev)
	n1.Do(t, func() error { _, err := n1.dev.Ensure(); return err })
	if after := n1.linkIndex(t, dev); after != before {
		t.Errorf("device was recreated (index %d -> %d) for mutable drift", before, after)
	}
	s := n1.snapshot(t)
	if s.link.MTU != 1450 || s.link.Flags&net.FlagUp == 0 || s.link.HardwareAddr.String() != MACFor(1, n1.underlay).String() {
		t.Errorf("after Ensure: mtu=%d up=%t mac=%s", s.link.MTU, s.link.Flags&net.FlagUp != 0, s.link.HardwareAddr)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.18.64.0/32")}; !slices.Equal(s.addrs, want) {
		t.Errorf("addresses after Ensure = %v, want %v", s.addrs, want)
	}
	// Going down dropped the routes; the next reconcile restores them.
	if st := n1.reconcile(t, peers); st.Added == 0 {
		t.Errorf("reconcile after the device went down = %+v, want the route re-added", st)
	}
	n1.checkRemotes(t, n2.peer())

	// Immutable drift (here: the port and learning) means recreating.
	n1.IP(t, "link", "del", dev)
	n1.IP(t, "link", "add", dev, "type", "vxlan", "id", "1", "dstport", "8472", "local", "198.18.0.1", "dev", "u0", "learning")
	n1.reconcile(t, peers)
	s = n1.snapshot(t)
	if s.link.Port != DefaultPort || s.link.Learning {
		t.Errorf("after reconcile: port=%d learning=%t, want %d false", s.link.Port, s.link.Learning, DefaultPort)
	}
	n1.checkRemotes(t, n2.peer())

	// An explicit MTU wins over the derived one.
	n1.dev.MTU = 1400
	n1.reconcile(t, peers)
	if s := n1.snapshot(t); s.link.MTU != 1400 {
		t.Errorf("MTU = %d, want the configured 1400", s.link.MTU)
	}
}

func TestEnsureRefusesForeignLink(t *testing.T) {
	n1, _ := newCluster(t)
	n1.IP(t, "link", "add", n1.dev.Name(), "type", "bridge")
	err := n1.Run(func() error { _, err := n1.dev.Ensure(); return err })
	if err == nil || !strings.Contains(err.Error(), "not VXLAN") {
		t.Fatalf("Ensure over a bridge named %s: err = %v, want a refusal", n1.dev.Name(), err)
	}
	err = n1.Run(func() error { return n1.dev.Delete() })
	if err == nil {
		t.Fatal("Delete removed a bridge it did not create")
	}
	if out := n1.IP(t, "link", "show", n1.dev.Name()); !strings.Contains(out, n1.dev.Name()) {
		t.Fatalf("bridge is gone: %s", out)
	}
}

func TestEnsureErrors(t *testing.T) {
	n1, _ := newCluster(t)
	for _, tc := range []struct {
		name string
		dev  Device
		want string
	}{
		{"local IP on no link", Device{VNI: 1, LocalIP: netip.MustParseAddr("198.18.0.9")}, "not configured on any link"},
		{"no local IP", Device{VNI: 1}, "not a usable unicast address"},
		{"VNI 0", Device{LocalIP: n1.underlay}, "VNI 0 out of range"},
		{"VNI too big", Device{VNI: 1 << 24, LocalIP: n1.underlay}, "out of range"},
		{"MTU too small", Device{VNI: 1, LocalIP: n1.underlay, MTU: 40}, "below the minimum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.dev.LockDir = t.TempDir()
			err := n1.Run(func() error { _, err := tc.dev.Ensure(); return err })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ensure() error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReconcileRejectsBadInput(t *testing.T) {
	n1, n2 := newCluster(t)
	n1.reconcile(t, []Peer{n1.peer(), n2.peer()})
	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"invalid peer", []Peer{n1.peer(), {NodeName: "x", UnderlayIP: "nope", PodCIDR: "198.18.70.0/24"}}, `peers[1].underlayIP: invalid IP "nope"`},
		{"IPv6 peer on IPv4 underlay", []Peer{n1.peer(), {NodeName: "x", UnderlayIP: "2001:db8::1", PodCIDR: "198.18.70.0/24"}}, "address family"},
		{"peer overlapping own CIDR", []Peer{{NodeName: "x", UnderlayIP: "198.18.0.7", PodCIDR: "198.18.64.0/23"}}, "overlaps this node's pod CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := n1.Run(func() error { _, err := n1.dev.Reconcile(tc.peers, n1.name); return err })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reconcile() error = %v, want %q", err, tc.want)
			}
			// Nothing was touched.
			n1.checkRemotes(t, n2.peer())
		})
	}
}

func TestReconcileSkipsSelfByName(t *testing.T) {
	n1, n2 := newCluster(t)
	// This node's entry lists an outdated underlay IP: it is still
	// recognised by name and not programmed as a remote.
	stale := Peer{NodeName: "n1", UnderlayIP: "198.18.0.111", PodCIDR: "198.18.64.0/24"}
	n1.reconcile(t, []Peer{stale, n2.peer()})
	n1.checkRemotes(t, n2.peer())
	// And by underlay IP when the name differs.
	renamed := Peer{NodeName: "n1-renamed", UnderlayIP: "198.18.0.1", PodCIDR: "198.18.64.0/24"}
	n1.reconcile(t, []Peer{renamed, n2.peer()})
	n1.checkRemotes(t, n2.peer())
}

func TestPodCIDRChangeMovesAddress(t *testing.T) {
	n1, n2 := newCluster(t)
	n1.reconcile(t, []Peer{n1.peer(), n2.peer()})
	n1.dev.PodCIDR = netip.MustParsePrefix("198.18.80.0/24")
	n1.reconcile(t, []Peer{n2.peer()})
	if s := n1.snapshot(t); !slices.Equal(s.addrs, []netip.Prefix{netip.MustParsePrefix("198.18.80.0/32")}) {
		t.Errorf("addresses = %v, want only 198.18.80.0/32", s.addrs)
	}
	// Without a pod CIDR the addresses are left alone.
	n1.dev.PodCIDR = netip.Prefix{}
	n1.reconcile(t, []Peer{n2.peer()})
	if s := n1.snapshot(t); !slices.Equal(s.addrs, []netip.Prefix{netip.MustParsePrefix("198.18.80.0/32")}) {
		t.Errorf("addresses = %v, want 198.18.80.0/32 kept", s.addrs)
	}
}

func TestDelete(t *testing.T) {
	n1, n2 := newCluster(t)
	n1.reconcile(t, []Peer{n1.peer(), n2.peer()})
	n1.Do(t, n1.dev.Delete)
	if out := n1.IP(t, "route", "show"); strings.Contains(out, "198.18.65.0") {
		t.Errorf("route survived Delete:\n%s", out)
	}
	n1.Do(t, func() error {
		if _, err := netlink.LinkByName(n1.dev.Name()); !isNotFound(err) {
			return fmt.Errorf("device still there after Delete (err=%v)", err)
		}
		return nil
	})
	// Deleting again is fine.
	n1.Do(t, n1.dev.Delete)
}

// TestConcurrentReconcile runs many reconciles at once, from goroutines and
// from separate processes, as the CNI plugin (one process per pod ADD) and
// berth-netd do. The lock must serialise them: no errors, and the entries
// added sum to exactly one set, because whoever comes second finds the work
// done.
func TestConcurrentReconcile(t *testing.T) {
	n1, n2 := newCluster(t)
	peers := []Peer{n1.peer(), n2.peer(), {NodeName: "n3", UnderlayIP: "198.18.0.3", PodCIDR: "198.18.66.0/24"}}
	peersFile := t.TempDir() + "/peers.json"
	writeAtomic(t, peersFile, peersJSON(t, peers...))

	const goroutines, processes = 6, 4
	var (
		mu    sync.Mutex
		added int
		errs  []error
		wg    sync.WaitGroup
	)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st Stats
			err := n1.Run(func() error {
				var err error
				st, err = n1.dev.Reconcile(peers, n1.name)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			added += st.Added
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	for range processes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := reconcileInProcess(n1, peersFile)
			mu.Lock()
			defer mu.Unlock()
			added += st.Added
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent reconciles failed: %v", err)
	}
	if added != 6 {
		t.Errorf("concurrent reconciles added %d entries in total, want exactly 6", added)
	}
	n1.checkRemotes(t, peers[1], peers[2])
}

func TestReconcileIPv6(t *testing.T) {
	overlaytest.RequireRoot(t)
	a := overlaytest.NewNetNS(t, "n1")
	b := overlaytest.NewNetNS(t, "n2")
	overlaytest.Veth(t, a, "u0", "2001:db8::1/64", b, "u0", "2001:db8::2/64")
	p1 := Peer{NodeName: "n1", UnderlayIP: "2001:db8::1", PodCIDR: "fd00:64::/64"}
	p2 := Peer{NodeName: "n2", UnderlayIP: "2001:db8::2", PodCIDR: "fd00:65::/64"}
	n1 := &node{NetNS: a, name: "n1", underlay: netip.MustParseAddr(p1.UnderlayIP), podCIDR: netip.MustParsePrefix(p1.PodCIDR)}
	n1.dev = &Device{VNI: 7, LocalIP: n1.underlay, PodCIDR: n1.podCIDR, LockDir: t.TempDir(), Logger: testLogger(t)}
	t.Cleanup(func() {
		if t.Failed() {
			n1.dumpState(t)
		}
	})
	if st := n1.reconcile(t, []Peer{p1, p2}); st != (Stats{Added: 3, Peers: 1}) {
		t.Errorf("reconcile = %+v, want 3 added", st)
	}
	n1.checkRemotes(t, p2)
	s := n1.snapshot(t)
	if s.link.MTU != 1500-70 {
		t.Errorf("MTU over IPv6 underlay = %d, want 1430", s.link.MTU)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("fd00:64::/128")}; !slices.Equal(s.addrs, want) {
		t.Errorf("addresses = %v, want %v", s.addrs, want)
	}
	if st := n1.reconcile(t, []Peer{p1, p2}); st.Added != 0 || st.Removed != 0 {
		t.Errorf("second reconcile = %+v, want no changes", st)
	}
	if st := n1.reconcile(t, []Peer{p1}); st.Removed != 3 {
		t.Errorf("reconcile without n2 = %+v, want 3 removed", st)
	}
	n1.checkRemotes(t)
}

func TestUnderlayDiscovery(t *testing.T) {
	n1, _ := newCluster(t)
	n1.Do(t, func() error {
		if _, err := DefaultRouteLink(); err == nil {
			return errors.New("DefaultRouteLink succeeded without a default route")
		}
		return nil
	})
	n1.IP(t, "addr", "add", "198.18.1.1/24", "dev", "u0") // second address: the first one wins
	n1.IP(t, "route", "add", "default", "via", "198.18.0.254", "dev", "u0")
	n1.Do(t, func() error {
		link, err := DefaultRouteLink()
		if err != nil {
			return err
		}
		if link.Attrs().Name != "u0" {
			return fmt.Errorf("DefaultRouteLink = %s, want u0", link.Attrs().Name)
		}
		ip, err := LinkUnderlayIP(link)
		if err != nil {
			return err
		}
		if ip != n1.underlay {
			return fmt.Errorf("LinkUnderlayIP = %s, want %s", ip, n1.underlay)
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if ip, err := LinkUnderlayIP(lo); err == nil {
			return fmt.Errorf("LinkUnderlayIP(lo) = %s, want an error (only host-scope addresses)", ip)
		}
		return nil
	})
}
