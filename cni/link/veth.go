package link

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// RoutedVeth is the vxlan-mode attachment: a veth pair whose pod end holds
// the pod's address and whose host end is routed to, rather than bridged.
type RoutedVeth struct {
	IfName   string // pod side
	HostName string // host side, see HostVethName
	Alias    string // set on the host side, see Alias
	MTU      int
}

// Create makes the pair from inside netns and moves the host end to hostNS.
// It returns the host and pod links as the kernel reports them.
func (v RoutedVeth) Create(netns, hostNS ns.NetNS) (host, pod net.Interface, err error) {
	err = netns.Do(func(ns.NetNS) error {
		var err error
		host, pod, err = ip.SetupVethWithName(v.IfName, v.HostName, v.MTU, "", hostNS)
		return err
	})
	if err != nil {
		return host, pod, fmt.Errorf("create veth %s/%s: %w", v.HostName, v.IfName, err)
	}
	hl, err := netlinksafe.LinkByName(v.HostName)
	if err != nil {
		return host, pod, err
	}
	if err := netlink.LinkSetAlias(hl, v.Alias); err != nil {
		return host, pod, fmt.Errorf("set alias on %s: %w", v.HostName, err)
	}
	return host, pod, nil
}
