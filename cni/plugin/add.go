package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/link"
	"github.com/berthdev/berth/cni/overlay"
)

// Add attaches the pod. On any failure it undoes what it did, in reverse, so
// a failed ADD leaves no link and no allocated address behind.
func Add(args *skel.CmdArgs) (retErr error) {
	r, closeLog, err := load(args, "ADD")
	defer closeLog()
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS: cannot open %q", args.Netns), err.Error())
	}
	defer netns.Close()

	master, err := resolveMaster(r.conf)
	if err != nil {
		return err
	}
	mtu := podMTU(r.conf, master)

	defer func() {
		if retErr == nil {
			return
		}
		r.log.Warn("ADD failed, rolling back", "error", retErr)
		for i := len(r.undo) - 1; i >= 0; i-- {
			r.undo[i]()
		}
	}()

	// The tenant decides the VNI and routing table in vxlan mode and the
	// isolation identity everywhere, so it is settled before any link. It
	// comes before the address too: with tenancy.registryMode "cluster" a
	// tenant may not have its index yet, and the runtime's retries of that
	// ADD (code 11) should not cycle addresses through the allocator.
	start := time.Now()
	if r.conf.Tenancy.On() {
		if r.tenantName, r.tenantIdx, err = r.tenant(); err != nil {
			return err
		}
	}
	tTenant := time.Since(start)
	res, err := r.allocate()
	if err != nil {
		return err
	}
	tAlloc := time.Since(start)
	r.onRollback(func() {
		if err := r.release(); err != nil {
			r.log.Error("rollback: release addresses", "error", err)
		}
	})
	switch r.conf.Mode {
	case config.ModeMacvlan, config.ModeIPvlan:
		err = r.addSub(netns, master, mtu, res)
	case config.ModeVXLAN:
		err = r.addRouted(netns, master, mtu, res)
	}
	if err != nil {
		return err
	}
	var podMAC net.HardwareAddr
	for _, i := range res.Interfaces {
		if i.Sandbox != "" {
			podMAC, _ = net.ParseMAC(i.Mac)
		}
	}
	tLink := time.Since(start)
	if err := r.addDataplane(netns, res, podMAC); err != nil {
		return err
	}
	res.DNS = r.conf.DNS
	// Cumulative phase times let an operator see where a slow ADD spent
	// its time without a profiler.
	r.log.Info("attached", "ips", res.IPs, "tenantDone", tTenant, "ipamDone", tAlloc,
		"linkDone", tLink, "dataplaneDone", time.Since(start))
	return types.PrintResult(res, r.conf.CNIVersion)
}

// addSub creates a macvlan or ipvlan child of master inside the pod and
// configures its addresses and routes.
func (r *request) addSub(netns ns.NetNS, master netlink.Link, mtu int, res *current.Result) error {
	mode := r.conf.MacvlanMode
	if r.conf.Mode == config.ModeIPvlan {
		mode = r.conf.IPvlanMode
	}
	l, err := link.CreateSub(link.SubInterface{
		Kind: r.conf.Mode, Mode: mode, Master: master, MTU: mtu, IfName: r.args.IfName,
	}, netns)
	if err == nil {
		r.onRollback(func() { r.deletePodLink(netns) })
	} else {
		if errors.Is(err, link.ErrKernelUnsupported) {
			return types.NewError(config.ErrCodeKernelUnsupported,
				fmt.Sprintf("mode: %s is not available: the running kernel has no %s support (CONFIG_%s)",
					r.conf.Mode, r.conf.Mode, strings.ToUpper(r.conf.Mode)), err.Error())
		}
		return types.NewError(config.ErrCodeLinkSetup, "create "+r.conf.Mode+" link on master "+master.Attrs().Name, err.Error())
	}
	res.Interfaces = []*current.Interface{{
		Name:    r.args.IfName,
		Mac:     l.Attrs().HardwareAddr.String(),
		Mtu:     l.Attrs().MTU,
		Sandbox: netns.Path(),
	}}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(0)
	}
	err = netns.Do(func(ns.NetNS) error {
		// Neighbours and the upstream switch should learn the new MAC now
		// rather than when their caches expire (the pod may reuse a recent
		// IP). With arp_notify the kernel announces the address itself
		// when the link comes up; a packet socket of our own would cost a
		// ~10 ms synchronize_net() on close, most of an ADD.
		_, _ = sysctl.Sysctl("net/ipv4/conf/"+r.args.IfName+"/arp_notify", "1")
		return ipam.ConfigureIface(r.args.IfName, res)
	})
	if err != nil {
		return types.NewError(config.ErrCodeLinkSetup, "configure "+r.args.IfName+" in the pod", err.Error())
	}
	return nil
}

// addRouted builds the vxlan-mode attachment: a veth whose host end is
// routed to the pod's /32, with the subnet gateway as the pod's on-link
// next hop, plus the node's VXLAN device and peer routes.
func (r *request) addRouted(netns ns.NetNS, underlay netlink.Link, mtu int, res *current.Result) error {
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return err
	}
	defer hostNS.Close()

	hostName := link.HostVethName(r.conf.Name, r.args.ContainerID, r.args.IfName)
	// A leftover host end from a crashed ADD for this very attachment would
	// make creation fail with EEXIST forever; it is ours by name, so remove it.
	_ = link.DeleteByName(hostName)
	hostIf, podIf, err := link.RoutedVeth{
		IfName: r.args.IfName, HostName: hostName, MTU: mtu,
		Alias: link.Alias(r.conf.Name, r.args.ContainerID, r.args.IfName),
	}.Create(netns, hostNS)
	if err != nil {
		_ = link.DeleteByName(hostName)
		return types.NewError(config.ErrCodeLinkSetup, "create veth pair", err.Error())
	}
	// Deleting the pod end removes the host end (and its routes) with it.
	r.onRollback(func() { r.deletePodLink(netns) })
	res.Interfaces = []*current.Interface{
		{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String(), Mtu: hostIf.MTU},
		{Name: podIf.Name, Mac: podIf.HardwareAddr.String(), Mtu: podIf.MTU, Sandbox: netns.Path()},
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(1)
		// The pod owns exactly its address; everything else, including
		// same-node pods, is reached through the host.
		ipc.Address.Mask = hostPrefixLen(ipc.Address.IP)
	}

	err = netns.Do(func(ns.NetNS) error { return configureRoutedPod(r.args.IfName, res) })
	if err != nil {
		return types.NewError(config.ErrCodeLinkSetup, "configure "+r.args.IfName+" in the pod", err.Error())
	}

	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		return types.NewError(config.ErrCodeLinkSetup, "find host veth "+hostName, err.Error())
	}
	for _, ipc := range res.IPs {
		if ipc.Gateway != nil {
			gw := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Gateway, Mask: hostPrefixLen(ipc.Gateway)}}
			if err := netlink.AddrAdd(hl, gw); err != nil && !errors.Is(err, unix.EEXIST) {
				return types.NewError(config.ErrCodeLinkSetup, "add gateway address to "+hostName, err.Error())
			}
		}
		dst := &net.IPNet{IP: ipc.Address.IP, Mask: hostPrefixLen(ipc.Address.IP)}
		rt := &netlink.Route{LinkIndex: hl.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(rt); err != nil {
			return types.NewError(config.ErrCodeLinkSetup, "route pod address via "+hostName, err.Error())
		}
	}
	if err := ip.EnableForward(res.IPs); err != nil {
		return types.NewError(config.ErrCodeLinkSetup, "enable IP forwarding", err.Error())
	}
	if err := r.addTenantRule(res); err != nil {
		return err
	}
	return r.ensureOverlay(underlay)
}

// addTenantRule steers a non-default tenant's pod into its tenant's
// routing table, whose remote pod CIDRs go out through the tenant's own
// VXLAN device (VNI vniBase+index): tenants are apart on the wire too.
func (r *request) addTenantRule(res *current.Result) error {
	table := overlay.TableFor(r.tenantIdx)
	if table == 0 {
		return nil
	}
	for _, ipc := range res.IPs {
		rule := tenantRule(ipc.Address.IP, table)
		if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return types.NewError(config.ErrCodeLinkSetup, fmt.Sprintf("ip rule from %s lookup %d", ipc.Address.IP, table), err.Error())
		}
		r.onRollback(func() { _ = netlink.RuleDel(rule) })
	}
	return nil
}

// TenantRulePriority places berth's source rules before the main table.
const TenantRulePriority = 1000

func tenantRule(ip net.IP, table int) *netlink.Rule {
	rule := netlink.NewRule()
	rule.Src = &net.IPNet{IP: ip, Mask: hostPrefixLen(ip)}
	rule.Table = table
	rule.Priority = TenantRulePriority
	if ip.To4() == nil {
		rule.Family = netlink.FAMILY_V6
	} else {
		rule.Family = netlink.FAMILY_V4
	}
	return rule
}

// configureRoutedPod runs inside the pod: address /32, an on-link route to
// the gateway, and the configured routes through it.
func configureRoutedPod(ifName string, res *current.Result) error {
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	for _, ipc := range res.IPs {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &ipc.Address}); err != nil {
			return fmt.Errorf("add address %s: %w", ipc.Address.String(), err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	gws := map[bool]net.IP{}
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			continue
		}
		v4 := ipc.Gateway.To4() != nil
		gws[v4] = ipc.Gateway
		gwNet := &net.IPNet{IP: ipc.Gateway, Mask: hostPrefixLen(ipc.Gateway)}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: gwNet, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route to gateway %s: %w", ipc.Gateway, err)
		}
	}
	for _, rt := range res.Routes {
		gw := rt.GW
		if gw == nil {
			gw = gws[rt.Dst.IP.To4() != nil]
		}
		dst := rt.Dst
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &dst, Gw: gw, Priority: rt.Priority, MTU: rt.MTU}
		if err := netlink.RouteReplace(nr); err != nil {
			return fmt.Errorf("add route %s via %s: %w", dst.String(), gw, err)
		}
	}
	return nil
}

// ensureOverlay makes sure this node's VXLAN device exists and, when a
// peers file is configured, that remote pod CIDRs are routed through it.
// A broken peers file does not fail the ADD: the pod still has node-local
// connectivity, berth-netd reports the file, and STATUS answers 51.
func (r *request) ensureOverlay(underlay netlink.Link) error {
	base, err := r.overlayDevice(underlay)
	if err != nil {
		return err
	}
	// The default tenant's device always exists: its routes in the main
	// table carry the node's own traffic to remote pods of every tenant.
	// The pod's tenant gets its own device (VNI vniBase+index) when
	// tenancy is on.
	tenants := []uint32{0}
	if r.conf.Tenancy.On() && r.tenantIdx != 0 {
		tenants = append(tenants, r.tenantIdx)
	}
	podNets := []netip.Prefix{base.PodCIDR}
	var peers []overlay.Peer
	if r.conf.PeersFile != "" {
		if peers, err = overlay.LoadPeers(r.conf.PeersFile); err != nil {
			r.log.Warn("peersFile unusable; remote nodes unreachable until it is fixed", "peersFile", r.conf.PeersFile, "error", err)
			peers = nil
		}
	}
	for _, p := range peers {
		if c, err := netip.ParsePrefix(p.PodCIDR); err == nil {
			podNets = append(podNets, c.Masked())
		}
	}
	if err := r.registerPodNets(podNets); err != nil {
		r.log.Warn("registering pod CIDRs for the VNI guard failed", "error", err)
	}
	for _, idx := range tenants {
		dev := *base
		if r.conf.Tenancy.On() {
			dev = overlay.TenantDevice(*base, r.conf.Tenancy.VNIBase, idx)
		}
		vx, err := dev.Ensure()
		if err != nil {
			return types.NewError(config.ErrCodeLinkSetup, fmt.Sprintf("vni: ensure VXLAN device %s", dev.Name()), err.Error())
		}
		// A node reaches a non-default tenant's remote pods through the
		// main table (default VNI) and hears back on the tenant's VNI:
		// strict reverse-path filtering would drop the replies. The
		// effective value is the max of "all" and the device's, so 2
		// (loose) here wins over 1.
		_, _ = sysctl.Sysctl("net/ipv4/conf/"+dev.Name()+"/rp_filter", "2")
		if r.conf.Tenancy.On() {
			if err := r.guardVNI(vx.Attrs().Index, idx); err != nil {
				return err
			}
		}
		if peers != nil {
			if _, err := dev.Reconcile(peers, r.conf.NodeName); err != nil {
				r.log.Warn("programming VXLAN peers failed", "device", dev.Name(), "error", err)
			}
		}
	}
	return nil
}

func (r *request) overlayDevice(underlay netlink.Link) (*overlay.Device, error) {
	local := r.conf.UnderlayAddr
	if !local.IsValid() {
		a, err := overlay.LinkUnderlayIP(underlay)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("underlayIP: not set and master %q has no IPv4 address", underlay.Attrs().Name), err.Error())
		}
		local = a
	}
	subnet, err := netip.ParsePrefix(r.conf.IPAM.Subnet)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam.subnet: "+err.Error(), "")
	}
	// MTU stays 0 so the device gets the same underlay-derived MTU that
	// berth-netd gives it; if the two disagreed they would keep resetting
	// each other. The conf's "mtu" is the pod interface's.
	return &overlay.Device{
		VNI: r.conf.VNI, Port: r.conf.VXLANPort, LocalIP: local,
		PodCIDR: subnet.Masked(), LockDir: r.conf.LockDir, Logger: r.log,
	}, nil
}

// onRollback registers an undo step for a failed ADD. Steps are registered
// only after the thing they undo exists, so a rollback never removes
// something that was there before (a pre-existing eth0 in the pod, say).
func (r *request) onRollback(f func()) { r.undo = append(r.undo, f) }

func (r *request) deletePodLink(netns ns.NetNS) {
	err := netns.Do(func(ns.NetNS) error { return link.DeleteByName(r.args.IfName) })
	if err != nil {
		r.log.Error("rollback: delete pod link", "error", err)
	}
}
