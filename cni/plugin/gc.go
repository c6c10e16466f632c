package plugin

import (
	"errors"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/link"
	bebpf "github.com/berthdev/berth/ebpf"
)

// GC releases everything of this network that belongs to an attachment not
// listed in cni.dev/valid-attachments: addresses, and in vxlan mode host
// veths whose pod namespace is still alive somewhere.
func GC(args *skel.CmdArgs) error {
	r, closeLog, err := load(args, "GC")
	defer closeLog()
	if err != nil {
		return err
	}
	valid := make(map[ipam.Attachment]bool, len(r.conf.ValidAttachments))
	list := make([]ipam.Attachment, 0, len(r.conf.ValidAttachments))
	for _, a := range r.conf.ValidAttachments {
		att := ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}
		valid[att] = true
		list = append(list, att)
	}

	if r.conf.Mode == config.ModeVXLAN {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return types.NewError(types.ErrIOFailure, "list links", err.Error())
		}
		for _, l := range links {
			if _, ok := l.(*netlink.Veth); !ok {
				continue
			}
			network, cid, ifName, ok := link.ParseAlias(l.Attrs().Alias)
			if !ok || network != r.conf.Name || valid[ipam.Attachment{ContainerID: cid, IfName: ifName}] {
				continue
			}
			if err := netlink.LinkDel(l); err != nil {
				r.log.Warn("gc: delete stale veth", "link", l.Attrs().Name, "error", err)
				continue
			}
			r.log.Info("gc: deleted stale veth", "link", l.Attrs().Name, "containerID", cid)
		}
	}

	if !r.conf.BuiltinIPAM() {
		_, err := invokeIPAM(r.conf.IPAM.Type, "GC", args.StdinData)
		return err
	}
	a, err := r.allocator()
	if err != nil {
		return err
	}
	released, err := a.GC(list)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "ipam: garbage-collect "+r.conf.IPAM.DataDir, err.Error())
	}
	if len(released) > 0 {
		r.log.Info("gc: released addresses", "count", len(released), "addresses", released)
	}
	if r.conf.Mode == config.ModeVXLAN {
		if err := deleteTenantRules(released); err != nil {
			return types.NewError(types.ErrIOFailure, "gc: delete tenant routing rules", err.Error())
		}
	}
	if err := r.forgetEndpoints(released); err != nil {
		return types.NewError(ErrCodeDataplane, "gc: forget dataplane endpoints", err.Error())
	}
	return r.gcStaleEndpoints(a)
}

// gcStaleEndpoints drops map entries inside this network's subnet whose
// address is no longer allocated (left by a crashed DEL, for instance).
func (r *request) gcStaleEndpoints(a *ipam.Allocator) error {
	if _, err := os.Stat(r.conf.BPFPinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	subnet, err := netip.ParsePrefix(r.conf.IPAM.Subnet)
	if err != nil {
		return nil
	}
	maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
	if err != nil {
		return types.NewError(ErrCodeDataplane, "bpfPinDir: cannot open the dataplane maps", err.Error())
	}
	defer maps.Close()
	// Endpoints first, allocations second: ADD allocates before it
	// registers, so every endpoint seen here whose pod is live has its
	// allocation in the later listing, and a concurrent ADD is never
	// mistaken for a stale entry.
	eps, err := maps.ListEndpoints()
	if err != nil {
		return types.NewError(ErrCodeDataplane, "list endpoints", err.Error())
	}
	live, err := a.List()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "ipam: list allocations", err.Error())
	}
	var stale []netip.Addr
	for addr := range eps {
		if _, ok := live[addr]; !ok && subnet.Masked().Contains(addr) {
			stale = append(stale, addr)
		}
	}
	if len(stale) > 0 {
		r.log.Info("gc: removed stale endpoints", "addresses", stale)
	}
	return r.forgetEndpoints(stale)
}
