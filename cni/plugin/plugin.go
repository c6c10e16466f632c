// Package plugin implements berth-cni's CNI verbs. Each verb lives in its own
// file (add.go, del.go, check.go, status.go, gc.go); this file holds what they
// share: loading the configuration, resolving the master link, and talking to
// the built-in or a delegated IPAM.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/link"
	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/ebpf/attach"
)

// About is printed when the binary runs without CNI_COMMAND.
const About = "berth CNI plugin: macvlan, ipvlan and VXLAN pod networks (https://github.com/berthdev/berth)"

// Funcs wires the verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, Status: Status, GC: GC}
}

// Versions is what VERSION reports.
func Versions() version.PluginInfo { return config.SupportedVersions }

// request bundles what every verb starts with.
type request struct {
	args *skel.CmdArgs
	conf *config.NetConf
	log  *slog.Logger
	att  ipam.Attachment
	undo []func() // ADD's rollback steps, run in reverse on failure

	// Set by ADD when tenancy is on.
	tenantName string
	tenantIdx  uint32
}

func load(args *skel.CmdArgs, verb string) (*request, func(), error) {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return nil, func() {}, err
	}
	attach.Prefer(attach.Mode(conf.AttachMode))
	logger, closeLog := newLogger(conf)
	logger = logger.With("verb", verb, "network", conf.Name, "mode", conf.Mode)
	if args.ContainerID != "" {
		logger = logger.With("containerID", args.ContainerID, "ifname", args.IfName)
	}
	return &request{
		args: args,
		conf: conf,
		log:  logger,
		att:  ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName},
	}, closeLog, nil
}

// newLogger logs JSON to conf.LogFile when set. Without a file, only warnings
// and errors go to stderr: stdout is the CNI result and must stay clean, and
// runtimes surface stderr only when something went wrong.
func newLogger(conf *config.NetConf) (*slog.Logger, func()) {
	level := slog.LevelInfo
	switch conf.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	var w io.Writer = os.Stderr
	closer := func() {}
	if conf.LogFile != "" {
		f, err := os.OpenFile(conf.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			w = f
			closer = func() { _ = f.Close() }
		}
	} else if conf.LogLevel == "" {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("component", "berth-cni"), closer
}

// resolveMaster finds the parent (macvlan/ipvlan) or underlay (vxlan) link.
// Its errors name the "master" field because that is what the operator must
// fix.
func resolveMaster(conf *config.NetConf) (netlink.Link, error) {
	if conf.Master == "" {
		l, err := overlay.DefaultRouteLink()
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				"master: not set, and no IPv4 default route to take it from", err.Error())
		}
		return l, nil
	}
	l, err := link.ByName(conf.Master)
	if errors.Is(err, link.ErrNotFound) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("master: link %q does not exist in the host network namespace", conf.Master), "")
	}
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("master: look up link %q", conf.Master), err.Error())
	}
	return l, nil
}

// podMTU applies the documented default: the master's MTU, less the VXLAN
// header in vxlan mode.
func podMTU(conf *config.NetConf, master netlink.Link) int {
	if conf.MTU != 0 {
		return conf.MTU
	}
	mtu := master.Attrs().MTU
	if conf.Mode == config.ModeVXLAN {
		mtu -= config.VXLANOverhead
	}
	return mtu
}

func (r *request) allocator() (*ipam.Allocator, error) {
	return ipam.New(r.conf.Name, r.conf.IPAM)
}

// allocate obtains the pod's addresses, from the built-in allocator or the
// delegated plugin, as a current result without interfaces.
func (r *request) allocate() (*current.Result, error) {
	if !r.conf.BuiltinIPAM() {
		res, err := invokeIPAM(r.conf.IPAM.Type, "ADD", r.args.StdinData)
		if err != nil {
			return nil, err
		}
		out, err := current.NewResultFromResult(res)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "ipam: convert result of "+r.conf.IPAM.Type, err.Error())
		}
		if len(out.IPs) == 0 {
			return nil, types.NewError(types.ErrInternal, "ipam: plugin "+r.conf.IPAM.Type+" returned no addresses", "")
		}
		return out, nil
	}
	a, err := r.allocator()
	if err != nil {
		return nil, err
	}
	addr, gw, err := a.Allocate(r.att)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	res.IPs = []*current.IPConfig{{Address: prefixToIPNet(addr), Gateway: gw.AsSlice()}}
	routes := r.conf.IPAM.Routes
	if routes == nil {
		// Absent routes mean "default route via the gateway": a pod with no
		// way out is never what a cluster wants. An explicit [] means none.
		dst := "0.0.0.0/0"
		if addr.Addr().Is6() {
			dst = "::/0"
		}
		_, n, _ := net.ParseCIDR(dst)
		routes = []*types.Route{{Dst: *n}}
	}
	for _, rt := range routes {
		c := *rt
		if c.GW == nil {
			c.GW = gw.AsSlice()
		}
		res.Routes = append(res.Routes, &c)
	}
	return res, nil
}

// release frees the attachment's addresses; it is idempotent.
func (r *request) release() error {
	if !r.conf.BuiltinIPAM() {
		_, err := invokeIPAM(r.conf.IPAM.Type, "DEL", r.args.StdinData)
		return err
	}
	a, err := r.allocator()
	if err != nil {
		return err
	}
	return a.Release(r.att)
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// hostPrefixLen is /32 or /128: routed (vxlan) pods own a single address.
func hostPrefixLen(ip net.IP) net.IPMask {
	if ip.To4() != nil {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

var bgctx = context.Background()
