package plugin

import (
	"errors"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/link"
	bebpf "github.com/berthdev/berth/ebpf"
)

// Del detaches the pod. It succeeds when the netns, the link or the
// allocation is already gone, because runtimes retry DEL until it does and a
// DEL that can never succeed wedges pod deletion forever.
func Del(args *skel.CmdArgs) error {
	r, closeLog, err := load(args, "DEL")
	defer closeLog()
	if err != nil {
		return err
	}
	addrs := r.attachedAddrs()
	// The link goes first so the address is never handed to a new pod
	// while the old one can still use it. Its programs and queues go with
	// it; the ingress-shaping ifb is a separate link.
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			return errors.Join(link.DeleteByName(args.IfName), link.DeleteByName(bebpf.IFBName(args.IfName)))
		})
		var notExist ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &notExist) {
			return types.NewError(types.ErrIOFailure, "delete "+args.IfName+" in "+args.Netns, err.Error())
		}
	}
	if r.conf.Mode == config.ModeVXLAN {
		// With the netns gone the kernel already removed the pair; this
		// covers a netns that is kept alive elsewhere.
		if err := link.DeleteByName(link.HostVethName(r.conf.Name, args.ContainerID, args.IfName)); err != nil {
			return types.NewError(types.ErrIOFailure, "delete host veth", err.Error())
		}
	}
	if r.conf.Mode == config.ModeVXLAN {
		if err := deleteTenantRules(addrs); err != nil {
			return types.NewError(types.ErrIOFailure, "delete tenant routing rules", err.Error())
		}
	}
	if err := r.forgetEndpoints(addrs); err != nil {
		return types.NewError(ErrCodeDataplane, "forget dataplane endpoints", err.Error())
	}
	if err := r.release(); err != nil {
		return err
	}
	r.log.Info("detached")
	return nil
}

// attachedAddrs is what the attachment holds: the allocator's record, or
// for delegated IPAM the prevResult the runtime passed.
func (r *request) attachedAddrs() []netip.Addr {
	if r.conf.BuiltinIPAM() {
		a, err := r.allocator()
		if err == nil {
			if p, ok, err := a.Get(r.att); err == nil && ok {
				return []netip.Addr{p.Addr()}
			}
		}
		return nil
	}
	if r.conf.PrevResult != nil {
		if prev, err := current.NewResultFromResult(r.conf.PrevResult); err == nil {
			return resultAddrs(prev)
		}
	}
	return nil
}
