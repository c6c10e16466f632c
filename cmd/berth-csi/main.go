// berth-csi is a CSI driver whose node plugin serves every volume as a
// FUSE filesystem over a node-local store, with quota, snapshots, clones,
// expansion and volumes that survive a restart of the plugin.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/berthdev/berth/csi/driver"
	"github.com/berthdev/berth/csi/fdstore"
	"github.com/berthdev/berth/csi/store"
)

var version = "dev"

func main() {
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

type options struct {
	cfg                driver.Config
	endpoint           string
	metricsAddress     string
	healthAddress      string
	registrationDir    string
	kubeletCSIEndpoint string
	logLevel           string
	claimContents      bool
	kubeconfig         string
}

func newCommand() *cobra.Command {
	host, _ := os.Hostname()
	nodeID := os.Getenv("NODE_NAME")
	if nodeID == "" {
		nodeID = strings.ToLower(host)
	}
	o := options{cfg: driver.Config{Mode: driver.ModeAll, DriverName: "berth.csi.dev", NodeID: nodeID,
		Root: "/var/lib/berth-csi/store", StateDir: "/var/lib/berth-csi/state", MaxVolumes: 256,
		Passthrough: true, Version: version, DefaultCapacity: 1 << 30}}
	var maxWrite, readAhead int
	cmd := &cobra.Command{
		Use:   "berth-csi",
		Short: "CSI driver serving each volume as a FUSE filesystem with quota, snapshots and restart survival",
		Long: `berth-csi implements the CSI Identity, Controller and Node services. The node
plugin mounts every volume as a FUSE filesystem over a directory of the
node-local store (--root), holds it to its capacity, and parks each /dev/fuse
descriptor in the fd store (berth-csi fdstore) so that a restart or upgrade
of the plugin never breaks a mounted volume. See docs/csi.md.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.cfg.Mount.MaxWrite, o.cfg.Mount.MaxReadAhead = maxWrite, readAhead
			return run(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cfg.Mode, "mode", o.cfg.Mode, "services to serve: controller, node or all")
	f.StringVar(&o.endpoint, "endpoint", "unix:///var/lib/kubelet/plugins/berth.csi.dev/csi.sock", "CSI endpoint (unix:// or tcp://)")
	f.StringVar(&o.cfg.DriverName, "driver-name", o.cfg.DriverName, "CSI driver name")
	f.StringVar(&o.cfg.NodeID, "node-id", o.cfg.NodeID, "this node's ID (default $NODE_NAME, else the host name)")
	f.StringVar(&o.cfg.Root, "root", o.cfg.Root, "backing store directory for volume and snapshot data")
	f.StringVar(&o.cfg.StateDir, "state-dir", o.cfg.StateDir, "directory for volume, snapshot and stage records")
	f.StringVar(&o.metricsAddress, "metrics-address", "127.0.0.1:9830", "Prometheus /metrics address (empty disables)")
	f.StringVar(&o.healthAddress, "health-address", "", "/healthz address for liveness probes (default: the metrics address)")
	f.StringVar(&o.registrationDir, "registration-dir", "", "kubelet plugins_registry directory to register in (empty: no registration)")
	f.StringVar(&o.kubeletCSIEndpoint, "kubelet-csi-endpoint", "", "CSI socket path as kubelet sees it (default: the --endpoint path)")
	f.StringVar(&o.cfg.FdStore, "fdstore", "", "fd store socket (unix://PATH) that keeps FUSE connections across restarts (empty: none)")
	f.Int64Var(&o.cfg.MaxVolumes, "max-volumes", o.cfg.MaxVolumes, "volumes this node may serve (NodeGetInfo max_volumes_per_node)")
	f.Int64Var(&o.cfg.DefaultCapacity, "default-capacity", o.cfg.DefaultCapacity, "capacity of a volume created with no capacity range, bytes")
	f.BoolVar(&o.cfg.Passthrough, "passthrough", o.cfg.Passthrough, "serve read-only opens with FUSE passthrough (Linux 6.9+)")
	f.IntVar(&maxWrite, "max-write", 1<<20, "FUSE max_write, bytes")
	f.IntVar(&readAhead, "max-readahead", 1<<20, "FUSE max_readahead, bytes")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.claimContents, "claim-snapshot-contents", false, "label pre-provisioned VolumeSnapshotContents whose snapshot lives on this node with snapshot.storage.k8s.io/managed-by=<node-id>, for a csi-snapshotter run with --node-deployment (needs API access)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --claim-snapshot-contents (default: in-cluster config)")
	cmd.Version = version
	cmd.AddCommand(fdstoreCommand())
	return cmd
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func socketPath(endpoint string) string {
	return strings.TrimPrefix(endpoint, "unix://")
}

func run(o options) error {
	log := newLogger(o.logLevel)
	switch o.cfg.Mode {
	case driver.ModeAll, driver.ModeController, driver.ModeNode:
	default:
		return fmt.Errorf("--mode %q: must be controller, node or all", o.cfg.Mode)
	}
	if err := store.ValidNodeID(o.cfg.NodeID); err != nil {
		return fmt.Errorf("--node-id: %w", err)
	}
	if o.cfg.FdStore != "" {
		o.cfg.FdStore = socketPath(o.cfg.FdStore)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d, err := driver.New(o.cfg, log, reg)
	if err != nil {
		return err
	}
	defer d.Close()
	l, err := driver.Listen(o.endpoint)
	if err != nil {
		return err
	}
	g := d.Server(reg)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	health := func(w http.ResponseWriter, r *http.Request) {
		if err := d.Healthy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
	mux.HandleFunc("/healthz", health)
	if o.metricsAddress != "" {
		go serveHTTP(log, o.metricsAddress, mux)
	}
	if o.healthAddress != "" && o.healthAddress != o.metricsAddress {
		hm := http.NewServeMux()
		hm.HandleFunc("/healthz", health)
		go serveHTTP(log, o.healthAddress, hm)
	}
	if o.registrationDir != "" && o.cfg.Mode != driver.ModeController {
		ep := o.kubeletCSIEndpoint
		if ep == "" {
			ep = socketPath(o.endpoint)
		}
		_, rg, err := d.Register(o.registrationDir, ep)
		if err != nil {
			return fmt.Errorf("kubelet registration: %w", err)
		}
		defer rg.Stop()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.claimContents {
		if o.cfg.Mode == driver.ModeNode {
			return fmt.Errorf("--claim-snapshot-contents needs the controller service (--mode all or controller): snapshots are checked by it")
		}
		owner, err := newContentOwner(o, log)
		if err != nil {
			return err
		}
		owner.Register(reg)
		go func() {
			if err := owner.Run(ctx); err != nil {
				log.Error("snapshot content owner stopped", "err", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		log.Info("shutting down; mounted volumes stay served by the fd store")
		g.GracefulStop()
	}()
	log.Info("berth-csi serving", "endpoint", o.endpoint, "mode", o.cfg.Mode, "node", o.cfg.NodeID, "version", version)
	return g.Serve(l)
}

func serveHTTP(log *slog.Logger, addr string, h http.Handler) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("http server", "address", addr, "err", err)
	}
}

func fdstoreCommand() *cobra.Command {
	var sock, level string
	cmd := &cobra.Command{
		Use:   "fdstore",
		Short: "hold /dev/fuse descriptors so mounted volumes outlive node plugin restarts",
		Long: `fdstore keeps the FUSE connections of berth-csi's volumes open while the node
plugin restarts. It runs apart from the plugin (its own DaemonSet, updated
OnDelete) because the connections last exactly as long as it does.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(level)
			path := socketPath(sock)
			l, err := fdstore.Listen(path)
			if err != nil {
				return err
			}
			s := fdstore.NewServer(log)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				log.Warn("fd store stopping: mounted volumes lose their FUSE connection once the node plugin is gone too", "held", s.Len())
				l.Close()
			}()
			log.Info("fd store serving", "socket", path)
			if err := s.Serve(l); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "unix:///var/lib/kubelet/plugins/berth.csi.dev/fdstore.sock", "socket to serve")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return cmd
}
