package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds the retries of a netlink dump that the kernel reports as
// interrupted (the table changed mid-dump, e.g. because another process is
// programming the same device). The result of such a dump may be incomplete,
// and a desired-state reconcile must not act on an incomplete picture.
const dumpRetries = 10

// dump runs a netlink dump and retries it while it is interrupted.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpRetries {
		var res []T
		res, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return nil, fmt.Errorf("netlink dump kept being interrupted: %w", err)
}

// DefaultRouteLink returns the link that carries the IPv4 default route of the
// main table. With several default routes, the one with the lowest metric
// wins, like in the kernel; for a multipath route the first next hop's link is
// used.
func DefaultRouteLink() (netlink.Link, error) {
	routes, err := dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	best := -1
	bestPrio := 0
	for i, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Type != unix.RTN_UNICAST || routeLinkIndex(r) == 0 {
			continue
		}
		if best < 0 || r.Priority < bestPrio {
			best, bestPrio = i, r.Priority
		}
	}
	if best < 0 {
		return nil, errors.New("no IPv4 default route")
	}
	idx := routeLinkIndex(routes[best])
	link, err := netlink.LinkByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("default route link %d: %w", idx, err)
	}
	return link, nil
}

func routeLinkIndex(r netlink.Route) int {
	if r.LinkIndex != 0 {
		return r.LinkIndex
	}
	for _, nh := range r.MultiPath {
		if nh.LinkIndex != 0 {
			return nh.LinkIndex
		}
	}
	return 0
}

// LinkUnderlayIP returns the first global-scope IPv4 address of link, which
// is the address berth uses as the node's VTEP when none is configured.
func LinkUnderlayIP(link netlink.Link) (netip.Addr, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) || a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("link %s has no global IPv4 address", link.Attrs().Name)
}

// linkWithAddr returns the link that has ip configured on it: the underlay
// link for a VTEP with that source address.
func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("link %d holding %s: %w", a.LinkIndex, ip, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("underlay address %s is not configured on any link", ip)
}

// ipOf converts a netip.Addr to the net.IP form netlink wants, in the 4-byte
// form for IPv4 so that netlink picks the right address family.
func ipOf(a netip.Addr) net.IP {
	if a.Is4() {
		b := a.As4()
		return net.IP(b[:])
	}
	b := a.As16()
	return net.IP(b[:])
}

// prefixOf converts a netip.Prefix to a *net.IPNet.
func prefixOf(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: ipOf(p.Addr()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// addrOf converts a net.IP from netlink back to an unmapped netip.Addr; the
// zero Addr means "absent".
func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// prefixFrom converts a *net.IPNet from netlink to a netip.Prefix; the zero
// Prefix means "absent or malformed".
func prefixFrom(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a := addrOf(n.IP)
	ones, bits := n.Mask.Size()
	if !a.IsValid() || bits == 0 {
		return netip.Prefix{}
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones)
}
