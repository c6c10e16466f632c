// Command berth-netd keeps this node's berth VXLAN overlay programmed from a
// static peers file: one device per tenant, berth.<vniBase+index>. It is the
// long-running counterpart of berth-cni's "vxlan" mode: the CNI plugin
// programs the overlay when a pod is added, and berth-netd follows changes of
// the peers file and the tenant registry and repairs drift between pod
// additions. Both go through the same locked, idempotent overlay.Reconcile.
//
// Alongside, it keeps the node-wide BPF state that follows the overlay: the
// VNI guard on every tenant device, the cluster's pod CIDR set, the removal of
// endpoints no pod holds any more, and the drop counters as metrics.
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

	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/tenant"
	bebpf "github.com/berthdev/berth/ebpf"
)

// defaultMetricsAddress is where /metrics, /healthz and /readyz are served.
// All interfaces, because berth-netd runs in the host network namespace and
// both Prometheus and the kubelet's probes reach it through the node IP; 9310
// sits in the Prometheus exporter port range and clashes with no Kubernetes
// component.
const defaultMetricsAddress = ":9310"

// shutdownTimeout bounds how long in-flight metric scrapes may delay exit.
const shutdownTimeout = 5 * time.Second

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

type options struct {
	peersFile      string
	vni            uint32
	vniBase        uint32 // 0 => vni
	tenantRegistry string
	bpfPinDir      string
	ipamDataDir    string
	network        string
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
	// Kubernetes mode: the peers file and the namespace mapping are
	// written from Nodes and Namespaces instead of being given.
	kubernetes    bool
	kubeconfig    string
	mappingFile   string
	confTemplates []string
	confFiles     []string
	// tenantTable is namespace/name of the ConfigMap holding the
	// cluster-wide tenant indexes; "-" leaves indexes to berth-cni.
	tenantTable string
	// remoteEndpoints: watch the other nodes' pods and keep berth_remote.
	remoteEndpoints bool
}

// Kubernetes-mode defaults: where the files written from the API live.
const (
	defaultKubePeersFile   = "/run/berth/peers.json"
	defaultKubeMappingFile = "/run/berth/namespace-tenants.json"
	defaultKubeTenantTable = "berth-system/berth-tenants"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		// cobra has already printed the error.
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	o := options{
		vni:            1,
		tenantRegistry: tenant.DefaultRegistry,
		bpfPinDir:      bebpf.DefaultPinDir,
		ipamDataDir:    ipam.DefaultDataDir,
		port:           overlay.DefaultPort,
		lockDir:        overlay.DefaultLockDir,
		metricsAddress: defaultMetricsAddress,
		resync:         overlay.DefaultResyncInterval,
		logLevel:       "info",
		logFormat:      "text",
		// On by default: without it, pods of different tenants on
		// different nodes reach each other on flat networks.
		remoteEndpoints: true,
	}
	cmd := &cobra.Command{
		Use:   "berth-netd",
		Short: "Keep the berth VXLAN overlay of this node in sync with a peers file",
		Long: `berth-netd programs one VXLAN device per tenant on this node,
berth.<vni-base + tenant index>, and on each, for every other node listed in
the peers file, a route to its pod CIDR plus the static neighbour and FDB
entries that send that traffic to its underlay IP. The default tenant (index
0) routes in the main table, every other tenant in table 10000+index.

Tenants come from the registry the CNI plugin keeps (--tenant-registry); a
missing registry means just the default tenant. With --bpf-pin-dir set it also
attaches the VNI guard to every tenant device, keeps the BPF set of pod CIDRs
equal to the peers file's, exports the BPF drop counters, and (with --network)
removes BPF endpoints of this node whose address is no longer allocated.
BPF problems are logged and reported by berth_netd_bpf_available; the overlay
works without.

It reconciles on start, whenever the peers file or the registry changes (their
directories are watched, so atomic renames and Kubernetes ConfigMap updates are
seen) and every --resync-interval. A peers file that fails to parse is logged
and the last good state is kept. On SIGTERM or SIGINT it exits without
removing the devices, so pod traffic keeps flowing across restarts.

With --kubernetes, the peers file is written by berth-netd itself from the
cluster's Nodes (spec.podCIDR and the first InternalIP, or the
berth.dev/underlay-ip annotation), and --tenant-mapping-file from Namespaces
labelled berth.dev/tenant=<tenant>, for berth-cni's tenancy.mappingFile.
Tenant indexes are then assigned cluster-wide in the --tenant-configmap
ConfigMap (append-only, written with resourceVersion checks by whichever
berth-netd first sees a new tenant) and mirrored into --tenant-registry, which
berth-cni reads with tenancy.registryMode "cluster". It also watches the other
nodes' Pods and keeps the BPF map berth_remote of their tenants (and the flat
networks' subnets as the default tenant's), which keeps tenants apart across
nodes on macvlan/ipvlan networks (--remote-endpoints). If the API server goes
away, the last files and map entries stay and the overlay keeps working.

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
			if !cmd.Flags().Changed("vni-base") {
				o.vniBase = o.vni
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return run(ctx, o, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.peersFile, "peers-file", "", "path of the JSON peers file (required, except with --kubernetes: default "+defaultKubePeersFile+", written from Nodes)")
	f.BoolVar(&o.kubernetes, "kubernetes", false, "take peers from the cluster's Nodes and tenants from Namespace labels (in-cluster config, or --kubeconfig)")
	f.StringArrayVar(&o.confTemplates, "cni-conflist-template", nil, "with --kubernetes, a conflist template ({{.PodCIDR}}, {{.NodeName}}, {{.PodCIDRThirdOctet}}) rendered for this node once its pod CIDR is allocated; repeatable, paired in order with --cni-conflist")
	f.StringArrayVar(&o.confFiles, "cni-conflist", nil, "where to write the rendered conflist, e.g. /etc/cni/net.d/10-berth.conflist; repeatable (written in file-name order, the runtime's default network first)")
	f.StringVar(&o.tenantTable, "tenant-configmap", defaultKubeTenantTable, "with --kubernetes, namespace/name of the ConfigMap of cluster-wide tenant indexes, mirrored into --tenant-registry (berth-cni: tenancy.registryMode \"cluster\"); \"-\" leaves indexes to berth-cni on each node")
	f.BoolVar(&o.remoteEndpoints, "remote-endpoints", o.remoteEndpoints, "with --kubernetes and --bpf-pin-dir, watch the pods of the other nodes and keep the BPF map of their tenants (berth_remote), which keeps tenants apart across nodes on flat networks (macvlan, ipvlan)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --kubernetes (default: the in-cluster service account)")
	f.StringVar(&o.mappingFile, "tenant-mapping-file", "", "with --kubernetes, the namespace → tenant file to write for berth-cni (default "+defaultKubeMappingFile+"; \"-\" disables)")
	f.Uint32Var(&o.vni, "vni", o.vni, "VXLAN network identifier of the default tenant, unless --vni-base is given; the device is named berth.<vni>")
	f.Uint32Var(&o.vniBase, "vni-base", 0, "VNI of tenant index 0; tenant i uses vni-base+i (default: --vni)")
	f.StringVar(&o.tenantRegistry, "tenant-registry", o.tenantRegistry, "tenant registry, kept by berth-cni or, with --kubernetes, mirrored from --tenant-configmap; every registered tenant gets a device (missing file: the default tenant only; empty: do not read)")
	f.StringVar(&o.bpfPinDir, "bpf-pin-dir", o.bpfPinDir, "bpffs directory of berth's pinned BPF maps, shared with berth-cni; empty disables all BPF work")
	f.StringVar(&o.ipamDataDir, "ipam-data-dir", o.ipamDataDir, "berth IPAM data directory (the network's allocations are in <dir>/<network>)")
	f.StringVar(&o.network, "network", "", "CNI network name whose IPAM allocations are authoritative for BPF endpoints of this node's pod CIDR; empty disables the stale endpoint GC")
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
	cmd.AddCommand(newInstallCommand())
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
	if o.vni == 0 || o.vni > maxVNI {
		return nil, fmt.Errorf("--vni %d out of range 1-%d", o.vni, maxVNI)
	}
	vniBase := o.vniBase
	if vniBase == 0 {
		vniBase = o.vni
	}
	// Every possible tenant must have a VNI; the same check as berth-cni's
	// tenancy.vniBase, so the two accept the same bases.
	if uint64(vniBase)+tenant.MaxTenants > maxVNI {
		return nil, fmt.Errorf("--vni-base %d leaves no room for %d tenants below %d (--vni-base defaults to --vni)", vniBase, tenant.MaxTenants, maxVNI)
	}
	if o.port < 1 || o.port > 65535 {
		return nil, fmt.Errorf("--port %d out of range 1-65535", o.port)
	}
	if o.mtu < 0 {
		return nil, fmt.Errorf("--mtu %d is negative", o.mtu)
	}
	w := &overlay.Watcher{
		PeersFile:      o.peersFile,
		NodeName:       o.nodeName,
		TenantRegistry: o.tenantRegistry,
		VNIBase:        vniBase,
		Logger:         logger,
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
	m := newMetrics()
	dp := newDataplane(o, logger, m)
	defer dp.close()
	if o.kubernetes {
		var err error
		if o, err = startKubernetes(ctx, o, logger, dp, m); err != nil {
			return err
		}
	}
	w, err := newWatcher(o, logger)
	if err != nil {
		return err
	}
	if err := m.register(newDropsCollector(dp.currentMaps, o.tenantRegistry, logger)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	w.OnResult = func(r overlay.Result) {
		// The BPF work needs the devices the reconcile just made, and
		// runs first so the metrics of this round include its outcome.
		dp.sync(r)
		m.observe(r)
	}

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

	logger.Info("starting", "vniBase", w.VNIBase, "port", w.Device.Port,
		"underlayIP", w.Device.LocalIP.String(), "nodeName", w.NodeName, "peersFile", w.PeersFile,
		"tenantRegistry", w.TenantRegistry, "bpfPinDir", o.bpfPinDir, "network", o.network,
		"resyncInterval", o.resync)
	if err := w.Run(ctx); err != nil {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	logger.Info("stopping; leaving the overlay devices in place")
	return nil
}
