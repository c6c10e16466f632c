package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/link"
	"github.com/berthdev/berth/cni/overlay"
	bebpf "github.com/berthdev/berth/ebpf"
)

// Status tells the runtime whether ADD can succeed right now. Code 50 (not
// available) makes kubelet report the node's network as not ready instead of
// failing pods one by one; code 51 means pods work with limited reach.
func Status(args *skel.CmdArgs) error {
	r, closeLog, err := load(args, "STATUS")
	defer closeLog()
	if err != nil {
		return err
	}
	unavailable := func(msg string, err error) error {
		detail := ""
		if err != nil {
			detail = err.Error()
		}
		r.log.Warn("not available", "reason", msg, "detail", detail)
		return types.NewError(config.ErrPluginNotAvailable, msg, detail)
	}

	master, err := resolveMaster(r.conf)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return unavailable(te.Msg, errors.New(te.Details))
		}
		return unavailable("master: unusable", err)
	}
	if r.conf.Mode == config.ModeIPvlan {
		if err := link.Probe("ipvlan", master); errors.Is(err, link.ErrKernelUnsupported) {
			return unavailable("mode: ipvlan is not available: the running kernel has no ipvlan support (CONFIG_IPVLAN)", err)
		}
	}
	if r.conf.BuiltinIPAM() {
		a, err := r.allocator()
		if err != nil {
			return unavailable("ipam: "+err.Error(), nil)
		}
		if err := a.Writable(); err != nil {
			return unavailable(fmt.Sprintf("ipam.dataDir: %s is not writable", r.conf.IPAM.DataDir), err)
		}
	} else if _, err := invokeIPAM(r.conf.IPAM.Type, "STATUS", args.StdinData); err != nil {
		return err
	}
	if r.dataplaneWanted() {
		maps, err := bebpf.OpenMaps(r.conf.BPFPinDir)
		if err != nil {
			return unavailable("bpfPinDir: the eBPF dataplane cannot be used", err)
		}
		maps.Close()
		path := bebpf.DetectPath()
		r.log.Info("dataplane", "shaping", path, "isolation", r.conf.Tenancy.On())
		// STATUS has no result object; this line is for operators and
		// tools (cnitool, logs) and callers ignore it.
		fmt.Printf(`{"dataplane":{"shaping":%q,"isolation":%t}}`+"\n", path, r.conf.Tenancy.On())
	}
	if r.conf.Mode == config.ModeVXLAN && r.conf.PeersFile != "" {
		if _, err := overlay.LoadPeers(r.conf.PeersFile); err != nil {
			return types.NewError(config.ErrLimitedConnectivity, "peersFile: "+r.conf.PeersFile+" is unusable; remote nodes are unreachable", err.Error())
		}
	}
	return nil
}
