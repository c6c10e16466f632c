package link

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// macvlanModes maps the config's names to the kernel's.
var macvlanModes = map[string]netlink.MacvlanMode{
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

var ipvlanModes = map[string]netlink.IPVlanMode{
	"l2":  netlink.IPVLAN_MODE_L2,
	"l3":  netlink.IPVLAN_MODE_L3,
	"l3s": netlink.IPVLAN_MODE_L3S,
}

// SubInterface describes a macvlan or ipvlan child of a master link.
type SubInterface struct {
	Kind   string // "macvlan" or "ipvlan"
	Mode   string // the config's mode name
	Master netlink.Link
	MTU    int
	IfName string // name inside the pod
}

// CreateSub creates the child link directly inside the pod's namespace under
// its final name. Creating it in netns (IFLA_NET_NS_FD) rather than in the
// host and moving it means the name only has to be unique inside the pod, and
// a crash can never strand a half-made link in the host namespace.
func CreateSub(s SubInterface, netns ns.NetNS) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = s.IfName
	attrs.ParentIndex = s.Master.Attrs().Index
	attrs.MTU = s.MTU
	attrs.Namespace = netlink.NsFd(int(netns.Fd()))

	var l netlink.Link
	switch s.Kind {
	case "macvlan":
		m, ok := macvlanModes[s.Mode]
		if !ok {
			return nil, fmt.Errorf("unknown macvlan mode %q", s.Mode)
		}
		l = &netlink.Macvlan{LinkAttrs: attrs, Mode: m}
	case "ipvlan":
		m, ok := ipvlanModes[s.Mode]
		if !ok {
			return nil, fmt.Errorf("unknown ipvlan mode %q", s.Mode)
		}
		l = &netlink.IPVlan{LinkAttrs: attrs, Mode: m}
	default:
		return nil, fmt.Errorf("unknown link kind %q", s.Kind)
	}
	if err := netlink.LinkAdd(l); err != nil {
		return nil, classifyAddErr(s.Kind, err)
	}
	var created netlink.Link
	err := netns.Do(func(ns.NetNS) error {
		var err error
		created, err = netlink.LinkByName(s.IfName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("find new %s link %q in pod: %w", s.Kind, s.IfName, err)
	}
	return created, nil
}

// Probe reports whether the kernel can create links of kind (e.g. "ipvlan")
// by making one in a throwaway namespace. Used by STATUS and by tests that
// must skip cleanly on kernels without the driver.
func Probe(kind string, master netlink.Link) error {
	tmp, err := ns.TempNetNS()
	if err != nil {
		return err
	}
	// Closing the only reference lets the kernel free the namespace and
	// the probe link with it.
	defer tmp.Close()
	s := SubInterface{Kind: kind, Master: master, IfName: "probe0"}
	switch kind {
	case "macvlan":
		s.Mode = "bridge"
	case "ipvlan":
		s.Mode = "l2"
	}
	_, err = CreateSub(s, tmp)
	return err
}
