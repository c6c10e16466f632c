// Command berth-netd keeps this node's berth VXLAN overlay programmed from a
// static peers file. It is the long-running counterpart of berth-cni's
// "vxlan" mode: the CNI plugin programs the overlay when a pod is added, and
// berth-netd follows changes of the peers file and repairs drift between pod
// additions. Both go through the same locked, idempotent overlay.Reconcile.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/cni/overlay"
)

// defaultMetricsAddress is where /metrics, /healthz and /readyz are served.
// All interfaces, because berth-netd runs in the host network namespace and
// both Prometheus and the kubelet's probes reach it through the node IP; 9310
// sits in the Prometheus exporter port range and clashes with no Kubernetes
// component.
const defaultMetricsAddress = ":9310"

// shutdownTimeout bounds how long in-flight metric scrapes may delay exit.
const shutdownTimeout = 5 * time.Second

type options struct {
	peersFile      string
	vni            uint32
	port           int
	underlayIP     string
	nodeName       string
	podCIDR        string
	mtu            int
	lockDir        string
	metricsAddress string
	resync         time.Duration
	logLevel       string
	logFormat      string
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		// cobra has already printed the error.
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	o := options{
		vni:            1,
		port:           overlay.DefaultPort,
		lockDir:        overlay.DefaultLockDir,
		metricsAddress: defaultMetricsAddress,
		resync:         overlay.DefaultResyncInterval,
		logLevel:       "info",
		logFormat:      "text",
	}
	cmd := &cobra.Command{
		Use:   "berth-netd",
		Short: "Keep the berth VXLAN overlay of this node in sync with a peers file",
		Long: `berth-netd programs the VXLAN device berth.<vni> of this node and, for every
other node listed in the peers file, a route to its pod CIDR plus the static
neighbour and FDB entries that send that traffic to its underlay IP.

It reconciles on start, whenever the peers file changes (the file's directory
is watched, so atomic renames and Kubernetes ConfigMap updates are seen) and
every --resync-interval. A peers file that fails to parse is logged and the
last good state is kept. On SIGTERM or SIGINT it exits without removing the
device, so pod traffic keeps flowing across restarts.

Peers file format (JSON):
  [{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"}, ...]`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true, // runtime errors are not usage errors
		SilenceErrors: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			slog.SetDefault(logger)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return run(ctx, o, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.peersFile, "peers-file", "", "path of the JSON peers file (required)")
	f.Uint32Var(&o.vni, "vni", o.vni, "VXLAN network identifier; the device is named berth.<vni>")
	f.IntVar(&o.port, "port", o.port, "VXLAN UDP port")
	f.StringVar(&o.underlayIP, "underlay-ip", "", "this node's underlay (VTEP) IP (default: the first global IPv4 of the link carrying the IPv4 default route)")
	f.StringVar(&o.nodeName, "node-name", "", "this node's name in the peers file (default: the lower-cased hostname, like the kubelet)")
	f.StringVar(&o.podCIDR, "pod-cidr", "", "this node's pod CIDR (default: the podCIDR of this node's own entry in the peers file)")
	f.IntVar(&o.mtu, "mtu", 0, "VXLAN device MTU (default: underlay link MTU minus 50 for IPv4, 70 for IPv6)")
	f.StringVar(&o.lockDir, "lock-dir", o.lockDir, "directory of the lock files shared with berth-cni")
	f.StringVar(&o.metricsAddress, "metrics-address", o.metricsAddress, "address serving /metrics, /healthz and /readyz; empty disables")
	f.DurationVar(&o.resync, "resync-interval", o.resync, "period of full reconciles that repair drift; 0 disables")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", o.logFormat, "log format: text or json")
	return cmd
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: unknown format %q (want text or json)", format)
	}
}

// newWatcher turns the flags into a Watcher, filling in the defaults that
// need the host (hostname, default-route link).
func newWatcher(o options, logger *slog.Logger) (*overlay.Watcher, error) {
	if o.peersFile == "" {
		return nil, errors.New("--peers-file is required")
	}
	if o.vni == 0 || o.vni > 1<<24-1 {
		return nil, fmt.Errorf("--vni %d out of range 1-16777215", o.vni)
	}
	if o.port < 1 || o.port > 65535 {
		return nil, fmt.Errorf("--port %d out of range 1-65535", o.port)
	}
	if o.mtu < 0 {
		return nil, fmt.Errorf("--mtu %d is negative", o.mtu)
	}
	w := &overlay.Watcher{
		PeersFile: o.peersFile,
		NodeName:  o.nodeName,
		Logger:    logger,
		Device: overlay.Device{
			VNI:     o.vni,
			Port:    o.port,
			MTU:     o.mtu,
			LockDir: o.lockDir,
			Logger:  logger,
		},
		ResyncInterval: o.resync,
	}
	if o.resync == 0 {
		w.ResyncInterval = -1 // the Watcher reads 0 as "default"
	}
	if w.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("--node-name not given and hostname unknown: %w", err)
		}
		w.NodeName = strings.ToLower(host)
	}
	if o.podCIDR != "" {
		p, err := netip.ParsePrefix(o.podCIDR)
		if err != nil {
			return nil, fmt.Errorf("--pod-cidr: invalid CIDR %q", o.podCIDR)
		}
		w.Device.PodCIDR = p.Masked()
	}
	if o.underlayIP != "" {
		ip, err := netip.ParseAddr(o.underlayIP)
		if err != nil {
			return nil, fmt.Errorf("--underlay-ip: invalid IP %q", o.underlayIP)
		}
		w.Device.LocalIP = ip.Unmap()
	} else {
		link, err := overlay.DefaultRouteLink()
		if err != nil {
			return nil, fmt.Errorf("--underlay-ip not given: %w", err)
		}
		ip, err := overlay.LinkUnderlayIP(link)
		if err != nil {
			return nil, fmt.Errorf("--underlay-ip not given: %w", err)
		}
		logger.Info("using the default-route link's address as underlay IP", "link", link.Attrs().Name, "underlayIP", ip.String())
		w.Device.LocalIP = ip
	}
	return w, nil
}

// run serves metrics and runs the watcher until ctx is done. The device is
// deliberately left in place on exit.
func run(ctx context.Context, o options, logger *slog.Logger) error {
	w, err := newWatcher(o, logger)
	if err != nil {
		return err
	}
	m := newMetrics()
	w.OnResult = m.observe

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o.metricsAddress != "" {
		// Listen before reconciling so a taken port fails the start
		// instead of surfacing later as a failing liveness probe.
		ln, err := net.Listen("tcp", o.metricsAddress)
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				cancel(fmt.Errorf("metrics server: %w", err))
			}
		}()
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}()
		logger.Info("serving metrics", "address", ln.Addr().String())
	}

	logger.Info("starting", "device", w.Device.Name(), "vni", w.Device.VNI, "port", w.Device.Port,
		"underlayIP", w.Device.LocalIP.String(), "nodeName", w.NodeName, "peersFile", w.PeersFile,
		"resyncInterval", o.resync)
	if err := w.Run(ctx); err != nil {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	logger.Info("stopping; leaving the overlay device in place", "device", w.Device.Name())
	return nil
}
