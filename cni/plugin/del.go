package plugin

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/link"
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
	// The link goes first so the address is never handed to a new pod
	// while the old one can still use it.
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			return link.DeleteByName(args.IfName)
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
	if err := r.release(); err != nil {
		return err
	}
	r.log.Info("detached")
	return nil
}
