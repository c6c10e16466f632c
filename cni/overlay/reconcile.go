package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// remote is the forwarding state one remote peer needs on this node.
type remote struct {
	peer
	mac net.HardwareAddr // the peer's VTEP MAC for our VNI
}

// desired filters out this node and checks that the remaining peers can be
// served by this device. Any problem fails the whole reconcile before anything
// is touched: programming a partial set would delete the entries of the peers
// that failed, which is worse than keeping the previous state.
func (d *Device) desired(peers []Peer, selfName string) ([]remote, error) {
	all, err := validatePeers(peers)
	if err != nil {
		return nil, err
	}
	local := d.localIP()
	out := make([]remote, 0, len(all))
	for i, p := range all {
		if p.underlay == local || (selfName != "" && p.name == selfName) {
			continue
		}
		// A VXLAN device has a single underlay address family.
		if p.underlay.Is4() != local.Is4() {
			return nil, fmt.Errorf("peers[%d].underlayIP: %s is not in the address family of the local underlay IP %s", i, p.underlay, local)
		}
		if d.PodCIDR.IsValid() && d.PodCIDR.Overlaps(p.podCIDR) {
			return nil, fmt.Errorf("peers[%d].podCIDR: %s overlaps this node's pod CIDR %s", i, p.podCIDR, d.PodCIDR)
		}
		out = append(out, remote{peer: p, mac: MACFor(d.VNI, p.underlay)})
	}
	return out, nil
}

// Reconcile makes the device and its forwarding state match peers: it runs
// Ensure, then for every remote peer (every peer except the one whose
// underlay IP is LocalIP or whose name is selfName) programs
//
//	route  <podCIDR> via <podCIDR network address> dev berth.<vni> onlink table <Table>
//	neigh  <podCIDR network address> lladdr MACFor(vni, underlayIP) nud permanent
//	fdb    MACFor(vni, underlayIP) dst <underlayIP> self permanent
//
// and finally deletes every route (table Device.Table, i.e. main for 0,
// output device berth.<vni>), permanent neighbour and FDB entry on the device
// that is not in that set.
// Entries are added before stale ones are deleted, and for one peer the FDB
// entry before the neighbour before the route (deletion in reverse), so a
// route never points into an unresolvable next hop.
//
// Invalid peers fail the call before anything changes. Errors programming
// individual entries do not stop the others; they are joined and returned
// along with the counts of what did succeed.
func (d *Device) Reconcile(peers []Peer, selfName string) (Stats, error) {
	if err := d.validate(); err != nil {
		return Stats{}, err
	}
	remotes, err := d.desired(peers, selfName)
	if err != nil {
		return Stats{}, fmt.Errorf("overlay: %w", err)
	}
	l, err := d.lock()
	if err != nil {
		return Stats{}, err
	}
	defer l.release()

	link, err := d.ensureLocked()
	if err != nil {
		return Stats{}, err
	}
	s := syncer{link: link, vni: d.VNI, table: d.table(), log: d.log().With("device", link.Attrs().Name), remotes: remotes}
	st := Stats{Peers: len(remotes)}
	var errs []error
	for _, step := range []func(*Stats) error{
		s.addFDB, s.addNeighs, s.addRoutes,
		s.pruneRoutes, s.pruneNeighs, s.pruneFDB,
	} {
		if err := step(&st); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return st, fmt.Errorf("overlay: reconcile %s: %w", link.Attrs().Name, err)
	}
	return st, nil
}

// syncer holds one reconcile's inputs for the per-table steps.
type syncer struct {
	link    netlink.Link
	vni     uint32
	table   int // kernel table ID of the routes (RT_TABLE_MAIN for Device.Table 0)
	log     *slog.Logger
	remotes []remote
}

func (s *syncer) index() int { return s.link.Attrs().Index }

// --- FDB -------------------------------------------------------------------

// fdbKey identifies one destination of a VXLAN FDB entry; a MAC can have
// several destinations, each listed as its own entry.
type fdbKey struct {
	mac string
	dst netip.Addr
}

func (s *syncer) listFDB() ([]netlink.Neigh, error) {
	fdb, err := dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(s.index(), unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list FDB: %w", err)
	}
	return fdb, nil
}

// fdbWanted reports whether the FDB entry e is one of the desired ones.
// Entries without NTF_SELF belong to a bridge the device is a port of, not
// to the VXLAN device's own table; an entry with a VNI other than the
// device's would encapsulate into the wrong segment.
func (s *syncer) fdbWanted(e netlink.Neigh, want map[fdbKey]bool) bool {
	return e.Flags&netlink.NTF_SELF != 0 &&
		(e.VNI == 0 || e.VNI == int(s.vni)) &&
		want[fdbKey{string(e.HardwareAddr), addrOf(e.IP)}]
}

func (s *syncer) wantFDB() map[fdbKey]bool {
	want := make(map[fdbKey]bool, len(s.remotes))
	for _, r := range s.remotes {
		want[fdbKey{string(r.mac), r.underlay}] = true
	}
	return want
}

func (s *syncer) addFDB(st *Stats) error {
	have, err := s.listFDB()
	if err != nil {
		return err
	}
	want := s.wantFDB()
	present := make(map[fdbKey]bool, len(have))
	for _, e := range have {
		if s.fdbWanted(e, want) {
			present[fdbKey{string(e.HardwareAddr), addrOf(e.IP)}] = true
		}
	}
	var errs []error
	for _, r := range s.remotes {
		if present[fdbKey{string(r.mac), r.underlay}] {
			continue
		}
		// The kernel keeps a single destination per unicast MAC, and
		// NLM_F_REPLACE rewrites it in place, so a wrong entry is fixed
		// without a moment in which the MAC has no entry at all.
		err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex:    s.index(),
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			HardwareAddr: r.mac,
			IP:           ipOf(r.underlay),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("add FDB entry %s dst %s for %s: %w", r.mac, r.underlay, r.name, err))
			continue
		}
		st.Added++
		s.log.Debug("added FDB entry", "peer", r.name, "mac", r.mac.String(), "dst", r.underlay.String())
	}
	return errors.Join(errs...)
}

func (s *syncer) pruneFDB(st *Stats) error {
	have, err := s.listFDB()
	if err != nil {
		return err
	}
	want := s.wantFDB()
	var errs []error
	for _, e := range have {
		// Entries without a destination are the device's own unicast and
		// multicast address lists that the kernel reports alongside the
		// real table; they are not forwarding state.
		if e.IP == nil || e.Flags&netlink.NTF_SELF == 0 || s.fdbWanted(e, want) {
			continue
		}
		err := netlink.NeighDel(&netlink.Neigh{
			LinkIndex:    s.index(),
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			HardwareAddr: e.HardwareAddr,
			IP:           e.IP,
			VNI:          e.VNI,
		})
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete stale FDB entry %s dst %s: %w", e.HardwareAddr, e.IP, err))
			}
			continue
		}
		st.Removed++
		s.log.Debug("deleted stale FDB entry", "mac", e.HardwareAddr.String(), "dst", e.IP.String())
	}
	return errors.Join(errs...)
}

// --- neighbours --------------------------------------------------------------

func (s *syncer) listNeighs() ([]netlink.Neigh, error) {
	var all []netlink.Neigh
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		n, err := dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(s.index(), family) })
		if err != nil {
			return nil, fmt.Errorf("list neighbours: %w", err)
		}
		all = append(all, n...)
	}
	return all, nil
}

// wantNeighs maps each gateway address to the MAC it must resolve to.
func (s *syncer) wantNeighs() map[netip.Addr]net.HardwareAddr {
	want := make(map[netip.Addr]net.HardwareAddr, len(s.remotes))
	for _, r := range s.remotes {
		want[r.gateway()] = r.mac
	}
	return want
}

func neighWanted(n netlink.Neigh, want map[netip.Addr]net.HardwareAddr) bool {
	mac, ok := want[addrOf(n.IP)]
	return ok && n.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(n.HardwareAddr, mac)
}

func (s *syncer) addNeighs(st *Stats) error {
	have, err := s.listNeighs()
	if err != nil {
		return err
	}
	want := s.wantNeighs()
	present := make(map[netip.Addr]bool, len(have))
	for _, n := range have {
		if neighWanted(n, want) {
			present[addrOf(n.IP)] = true
		}
	}
	var errs []error
	for _, r := range s.remotes {
		if present[r.gateway()] {
			continue
		}
		family := netlink.FAMILY_V4
		if r.gateway().Is6() {
			family = netlink.FAMILY_V6
		}
		// Replace also turns a dynamic entry the kernel may have created
		// for the gateway (e.g. a FAILED one from before the peer was
		// known) into the permanent one.
		err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex:    s.index(),
			Family:       family,
			State:        netlink.NUD_PERMANENT,
			Type:         unix.RTN_UNICAST,
			IP:           ipOf(r.gateway()),
			HardwareAddr: r.mac,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("add neighbour %s lladdr %s for %s: %w", r.gateway(), r.mac, r.name, err))
			continue
		}
		st.Added++
		s.log.Debug("added neighbour", "peer", r.name, "ip", r.gateway().String(), "mac", r.mac.String())
	}
	return errors.Join(errs...)
}

func (s *syncer) pruneNeighs(st *Stats) error {
	have, err := s.listNeighs()
	if err != nil {
		return err
	}
	want := s.wantNeighs()
	var errs []error
	for _, n := range have {
		// Only permanent entries are configuration; dynamic ones are the
		// kernel's cache (IPv6 keeps some for its own link-local traffic)
		// and age out by themselves.
		if n.State&netlink.NUD_PERMANENT == 0 || neighWanted(n, want) {
			continue
		}
		err := netlink.NeighDel(&netlink.Neigh{LinkIndex: s.index(), Family: n.Family, IP: n.IP})
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete stale neighbour %s: %w", n.IP, err))
			}
			continue
		}
		st.Removed++
		s.log.Debug("deleted stale neighbour", "ip", n.IP.String(), "mac", n.HardwareAddr.String())
	}
	return errors.Join(errs...)
}

// --- routes ------------------------------------------------------------------

func (s *syncer) listRoutes() ([]netlink.Route, error) {
	routes, err := dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: s.index(), Table: s.table},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return routes, nil
}

// wantRoutes maps each remote pod CIDR to its gateway.
func (s *syncer) wantRoutes() map[netip.Prefix]netip.Addr {
	want := make(map[netip.Prefix]netip.Addr, len(s.remotes))
	for _, r := range s.remotes {
		want[r.podCIDR] = r.gateway()
	}
	return want
}

func routeWanted(rt netlink.Route, want map[netip.Prefix]netip.Addr) bool {
	gw, ok := want[prefixFrom(rt.Dst)]
	return ok &&
		rt.Type == unix.RTN_UNICAST &&
		rt.Flags&int(netlink.FLAG_ONLINK) != 0 &&
		len(rt.MultiPath) == 0 &&
		addrOf(rt.Gw) == gw
}

func (s *syncer) addRoutes(st *Stats) error {
	have, err := s.listRoutes()
	if err != nil {
		return err
	}
	want := s.wantRoutes()
	present := make(map[netip.Prefix]bool, len(have))
	for _, rt := range have {
		if routeWanted(rt, want) {
			present[prefixFrom(rt.Dst)] = true
		}
	}
	var errs []error
	for _, r := range s.remotes {
		if present[r.podCIDR] {
			continue
		}
		// onlink: the gateway is not inside any prefix on the device (it
		// only has a host address), so the kernel must be told it is
		// directly reachable through it.
		err := netlink.RouteReplace(&netlink.Route{
			LinkIndex: s.index(),
			Dst:       prefixOf(r.podCIDR),
			Gw:        ipOf(r.gateway()),
			Flags:     int(netlink.FLAG_ONLINK),
			Table:     s.table,
			Scope:     netlink.SCOPE_UNIVERSE,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("add route %s via %s for %s: %w", r.podCIDR, r.gateway(), r.name, err))
			continue
		}
		st.Added++
		s.log.Debug("added route", "peer", r.name, "dst", r.podCIDR.String(), "via", r.gateway().String(), "table", s.table)
	}
	return errors.Join(errs...)
}

func (s *syncer) pruneRoutes(st *Stats) error {
	have, err := s.listRoutes()
	if err != nil {
		return err
	}
	want := s.wantRoutes()
	kept := make(map[netip.Prefix]bool, len(want))
	var errs []error
	for _, rt := range have {
		// Routes the kernel derives from addresses (e.g. IPv6 fe80::/64)
		// are not ours to remove.
		if rt.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		dst := prefixFrom(rt.Dst)
		// The first matching route for a destination is kept; another
		// one (e.g. the same prefix at a different metric) is a stale
		// duplicate.
		if !kept[dst] && routeWanted(rt, want) {
			kept[dst] = true
			continue
		}
		if err := netlink.RouteDel(&rt); err != nil {
			if !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete stale route %s: %w", dst, err))
			}
			continue
		}
		st.Removed++
		s.log.Debug("deleted stale route", "dst", dst.String(), "via", addrOf(rt.Gw).String(), "table", s.table)
	}
	return errors.Join(errs...)
}
