// berth-cri serves the Kubernetes CRI (runtime.v1 RuntimeService and
// ImageService) on a unix socket and runs pods on containerd.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/berthdev/berth/cri"
)

// version is set with -ldflags "-X main.version=..."; the Version RPC
// reports it when it is a semantic version and otherwise falls back to
// what Go recorded about the build (cri.RuntimeVersion).
var version = "dev"

func main() {
	cri.Version = version
	if err := newCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var configPath string
	cfg := cri.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "berth-cri",
		Short: "CRI runtime for kubelet on containerd, with pause sandboxes and CNI networking",
		Long: `berth-cri serves the Kubernetes Container Runtime Interface on a unix socket
(default /run/berth/cri.sock) and runs pods on containerd. Settings come from
the TOML file given with --config (see docs/cri-config.md); flags override it.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			final, err := cri.LoadConfig(configPath)
			if err != nil {
				return err
			}
			// Flags given on the command line win over the file.
			applyFlags(cmd.Flags(), &cfg, &final)
			return run(final)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file (defaults apply to missing keys)")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "CRI unix socket path")
	f.StringVar(&cfg.ContainerdAddress, "containerd-address", cfg.ContainerdAddress, "containerd socket")
	f.StringVar(&cfg.ContainerdNamespace, "containerd-namespace", cfg.ContainerdNamespace, "containerd namespace for pods")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "CNI config directory (first conflist is used)")
	f.StringSliceVar(&cfg.CNIBinDirs, "cni-bin-dir", cfg.CNIBinDirs, "CNI plugin directories")
	f.StringVar(&cfg.PauseImage, "pause-image", cfg.PauseImage, "sandbox (pause) image")
	f.StringVar(&cfg.RootDir, "root", cfg.RootDir, "persistent state directory")
	f.StringVar(&cfg.StateDir, "state", cfg.StateDir, "runtime state directory (netns pins, FIFOs, shm)")
	f.StringVar(&cfg.RegistryConfigDir, "registry-config-dir", cfg.RegistryConfigDir, "hosts.toml mirror configuration directory")
	f.StringVar(&cfg.StreamAddress, "stream-address", cfg.StreamAddress, "exec/attach/port-forward server address")
	f.StringVar(&cfg.MetricsAddress, "metrics-address", cfg.MetricsAddress, "Prometheus metrics and /healthz address (empty disables)")
	f.StringVar(&cfg.RuncPath, "runc-path", cfg.RuncPath, "runc binary used by the shim (empty: runc in the shim's PATH)")
	f.StringVar(&cfg.CgroupDriver, "cgroup-driver", cfg.CgroupDriver, "cgroupfs or systemd; must match kubelet")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	cmd.Version = cri.RuntimeVersion()
	return cmd
}

// applyFlags copies every flag the user set from flagCfg into final.
func applyFlags(fs *pflag.FlagSet, flagCfg, final *cri.Config) {
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "socket":
			final.Socket = flagCfg.Socket
		case "containerd-address":
			final.ContainerdAddress = flagCfg.ContainerdAddress
		case "containerd-namespace":
			final.ContainerdNamespace = flagCfg.ContainerdNamespace
		case "cni-conf-dir":
			final.CNIConfDir = flagCfg.CNIConfDir
		case "cni-bin-dir":
			final.CNIBinDirs = flagCfg.CNIBinDirs
		case "pause-image":
			final.PauseImage = flagCfg.PauseImage
		case "root":
			final.RootDir = flagCfg.RootDir
		case "state":
			final.StateDir = flagCfg.StateDir
		case "registry-config-dir":
			final.RegistryConfigDir = flagCfg.RegistryConfigDir
		case "stream-address":
			final.StreamAddress = flagCfg.StreamAddress
		case "metrics-address":
			final.MetricsAddress = flagCfg.MetricsAddress
		case "runc-path":
			final.RuncPath = flagCfg.RuncPath
		case "cgroup-driver":
			final.CgroupDriver = flagCfg.CgroupDriver
		case "log-level":
			final.LogLevel = flagCfg.LogLevel
		}
	})
}

func run(cfg cri.Config) error {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	svc, err := cri.New(ctx, cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return err
	}
	defer svc.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := cri.NewMetrics(reg)
	g := grpc.NewServer(grpc.UnaryInterceptor(metrics.Interceptor(log)),
		grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	svc.Register(g)
	svc.Start()

	lis, err := listenUnix(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		log.Error("listen", "socket", cfg.Socket, "err", err)
		return err
	}
	if cfg.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Addr: cfg.MetricsAddress, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer srv.Close()
	}
	log.Info("berth-cri serving", "socket", cfg.Socket, "containerd", cfg.ContainerdAddress,
		"namespace", cfg.ContainerdNamespace, "version", cri.RuntimeVersion())
	errCh := make(chan error, 1)
	go func() { errCh <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
		g.GracefulStop()
		return nil
	case err := <-errCh:
		return err
	}
}

// listenUnix replaces a stale socket and restricts it to mode 0660.
func listenUnix(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, err
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("socket_group %q: %w", group, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, 0, gid); err != nil {
			lis.Close()
			return nil, err
		}
	}
	return lis, nil
}
