package plugin

import (
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/link"
)

// Check verifies that what ADD built is still there and still matches
// prevResult: the link and its kind, its addresses and routes, the address
// allocation, and in vxlan mode the host end and its route.
func Check(args *skel.CmdArgs) error {
	r, closeLog, err := load(args, "CHECK")
	defer closeLog()
	if err != nil {
		return err
	}
	if r.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "prevResult: required for CHECK", "")
	}
	prev, err := current.NewResultFromResult(r.conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult: cannot convert", err.Error())
	}
	fail := func(format string, a ...any) error {
		return types.NewError(types.ErrInternal, "check: "+fmt.Sprintf(format, a...), "")
	}

	var podIf, hostIf *current.Interface
	for _, i := range prev.Interfaces {
		switch {
		case i.Sandbox != "" && i.Name == args.IfName:
			podIf = i
		case i.Sandbox == "":
			hostIf = i
		}
	}
	if podIf == nil {
		return fail("prevResult has no interface %q in a sandbox", args.IfName)
	}

	if err := r.checkIPAM(prev); err != nil {
		return err
	}
	master, err := resolveMaster(r.conf)
	if err != nil {
		return err
	}

	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS: cannot open %q", args.Netns), err.Error())
	}
	defer netns.Close()
	var peerIndex int
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fail("link %q not found in the pod: %v", args.IfName, err)
		}
		if podIf.Mac != "" && r.conf.Mode != config.ModeIPvlan && l.Attrs().HardwareAddr.String() != podIf.Mac {
			return fail("link %q has MAC %s, prevResult says %s", args.IfName, l.Attrs().HardwareAddr, podIf.Mac)
		}
		switch r.conf.Mode {
		case config.ModeMacvlan:
			mv, ok := l.(*netlink.Macvlan)
			if !ok {
				return fail("link %q is a %s, want macvlan", args.IfName, l.Type())
			}
			if mv.ParentIndex != master.Attrs().Index {
				return fail("macvlan %q is not a child of master %q", args.IfName, master.Attrs().Name)
			}
		case config.ModeIPvlan:
			iv, ok := l.(*netlink.IPVlan)
			if !ok {
				return fail("link %q is a %s, want ipvlan", args.IfName, l.Type())
			}
			if iv.ParentIndex != master.Attrs().Index {
				return fail("ipvlan %q is not a child of master %q", args.IfName, master.Attrs().Name)
			}
		case config.ModeVXLAN:
			if _, ok := l.(*netlink.Veth); !ok {
				return fail("link %q is a %s, want veth", args.IfName, l.Type())
			}
			_, peerIndex, err = ip.GetVethPeerIfindex(args.IfName)
			if err != nil {
				return fail("veth peer of %q: %v", args.IfName, err)
			}
		}
		if r.conf.Mode == config.ModeVXLAN {
			// A routed pod's /32 has no connected route for the library
			// check to find; verify the address and the on-link gateway.
			if err := checkRoutedAddrs(l, prev.IPs); err != nil {
				return fail("%v", err)
			}
		} else if err := ip.ValidateExpectedInterfaceIPs(args.IfName, prev.IPs); err != nil {
			return fail("%v", err)
		}
		if err := ip.ValidateExpectedRoute(prev.Routes); err != nil {
			return fail("%v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.checkDataplane(netns, prev); err != nil {
		return err
	}
	if r.conf.Mode == config.ModeVXLAN {
		return checkHostSide(args, r.conf, hostIf, peerIndex, prev)
	}
	return nil
}

func (r *request) checkIPAM(prev *current.Result) error {
	if !r.conf.BuiltinIPAM() {
		_, err := invokeIPAM(r.conf.IPAM.Type, "CHECK", r.args.StdinData)
		return err
	}
	a, err := r.allocator()
	if err != nil {
		return err
	}
	got, ok, err := a.Get(r.att)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "ipam: read allocation", err.Error())
	}
	if !ok {
		return types.NewError(types.ErrInternal, "check: no address is allocated to this attachment", "")
	}
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.Equal(net.IP(got.Addr().AsSlice())) {
			return nil
		}
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("check: allocated address %s is not in prevResult", got.Addr()), "")
}

// checkHostSide verifies the vxlan host end: it exists under its
// deterministic name, it is the pod veth's peer, and the pod's /32 is
// routed to it.
func checkHostSide(args *skel.CmdArgs, conf *config.NetConf, hostIf *current.Interface, peerIndex int, prev *current.Result) error {
	name := link.HostVethName(conf.Name, args.ContainerID, args.IfName)
	if hostIf != nil && hostIf.Name != name {
		return types.NewError(types.ErrInternal, fmt.Sprintf("check: prevResult host interface %q, expected %q", hostIf.Name, name), "")
	}
	hl, err := netlinksafe.LinkByName(name)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("check: host veth %q missing", name), err.Error())
	}
	if hl.Attrs().Index != peerIndex {
		return types.NewError(types.ErrInternal, fmt.Sprintf("check: host veth %q is not the peer of %q", name, args.IfName), "")
	}
	routes, err := netlinksafe.RouteList(hl, netlink.FAMILY_ALL)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "list routes of "+name, err.Error())
	}
	for _, ipc := range prev.IPs {
		found := false
		for _, rt := range routes {
			if rt.Dst != nil && rt.Dst.IP.Equal(ipc.Address.IP) {
				ones, bits := rt.Dst.Mask.Size()
				found = ones == bits
			}
			if found {
				break
			}
		}
		if !found {
			return types.NewError(types.ErrInternal, fmt.Sprintf("check: no host route for %s via %s", ipc.Address.IP, name), "")
		}
	}
	return nil
}

func checkRoutedAddrs(l netlink.Link, ips []*current.IPConfig) error {
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ipc := range ips {
		want := netlink.Addr{IPNet: &ipc.Address}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.Equal(want) }) {
			return fmt.Errorf("address %s missing on %s", ipc.Address.String(), l.Attrs().Name)
		}
		if ipc.Gateway == nil {
			continue
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.IP.Equal(ipc.Gateway) && r.Scope == netlink.SCOPE_LINK
		}) {
			return fmt.Errorf("on-link route to gateway %s missing on %s", ipc.Gateway, l.Attrs().Name)
		}
	}
	return nil
}
