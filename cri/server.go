// Package cri is berth-cri: the CRI RuntimeService and ImageService served
// to kubelet, implemented on containerd's Go client. Files are grouped by RPC
// family the way containerd's internal/cri/server is: sandbox_*.go,
// container_*.go, exec.go, stats.go, events.go, version_status.go.
package cri

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/berthdev/berth/cri/images"
	"github.com/berthdev/berth/cri/spec"
)

// Service implements runtime.RuntimeServiceServer. Image RPCs are served by
// the embedded images.Service; both are registered on the same socket.
type Service struct {
	runtime.UnimplementedRuntimeServiceServer

	metricsWarn sync.Once // first failure of a shim's Metrics, at warn
	oomWarn     sync.Once // first failure to watch a cgroup for OOM, at warn

	cfg    Config
	log    *slog.Logger
	client *containerd.Client
	images *images.Service
	cni    *cniManager
	stream streaming.Server
	rt     spec.Runtime
	// oomFloor is the lowest oom_score_adj this process may hand out.
	oomFloor int
	// usernsSupported: runc can create pod user namespaces with idmapped
	// mounts, so the handler advertises user_namespaces.
	usernsSupported bool

	sandboxes  *store[*sandbox]
	containers *store[*container]
	inflight   *inflight
	events     *eventHub

	// netMu guards the runtime network config pushed by UpdateRuntimeConfig.
	netMu   sync.Mutex
	podCIDR string

	stopCh chan struct{}
	wg     sync.WaitGroup
}

// New connects to containerd, loads every sandbox and container berth-cri
// created before (containerd is the source of truth), and prepares the CNI
// and streaming servers. It does not listen on the CRI socket: see Serve.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.RootDir, cfg.StateDir, cfg.CNICache(),
		filepath.Join(cfg.StateDir, "netns"), filepath.Join(cfg.RootDir, "sandboxes"),
		filepath.Join(cfg.StateDir, "sandboxes"), filepath.Join(cfg.StateDir, "containers")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	client, err := containerd.New(cfg.ContainerdAddress,
		containerd.WithDefaultNamespace(cfg.ContainerdNamespace),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.ContainerdAddress, err)
	}
	s := &Service{
		cfg:        cfg,
		log:        log,
		client:     client,
		sandboxes:  newStore[*sandbox](),
		containers: newStore[*container](),
		inflight:   newInflight(),
		stopCh:     make(chan struct{}),
	}
	// Statuses in events name images like ContainerStatus does; the image
	// service behind s.imageNames is set just below, before any event.
	s.events = newEventHub(s.imageNames)
	ctx = s.nsCtx(ctx)
	s.images, err = images.New(ctx, client, images.Options{
		Snapshotter:       cfg.Snapshotter,
		RegistryConfigDir: cfg.RegistryConfigDir,
		Namespace:         cfg.ContainerdNamespace,
		PinnedImages:      []string{cfg.PauseImage},
		Logger:            log,
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("image service: %w", err)
	}
	s.rt = spec.Runtime{CgroupDriver: cfg.CgroupDriver, SeccompEnabled: seccompEnabled()}
	s.rt.RROSupported, s.usernsSupported = s.probeFeatures(ctx)
	if s.oomFloor = oomScoreFloor(); s.oomFloor > -1000 {
		log.Warn("no CAP_SYS_RESOURCE: container oom_score_adj is clamped", "floor", s.oomFloor)
	}
	s.cni, err = newCNIManager(cfg, log)
	if err != nil {
		client.Close()
		return nil, err
	}
	if s.stream, err = s.newStreamServer(); err != nil {
		client.Close()
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("recover state from containerd: %w", err)
	}
	return s, nil
}

// Register adds both CRI services to a gRPC server.
func (s *Service) Register(g *grpc.Server) {
	runtime.RegisterRuntimeServiceServer(g, s)
	runtime.RegisterImageServiceServer(g, s.images)
}

// Start runs the background loops: the streaming server, OOM events, image
// events, CNI teardown retries and conflist watching.
func (s *Service) Start() {
	s.wg.Add(4)
	go func() {
		defer s.wg.Done()
		if err := s.stream.Start(true); err != nil {
			s.log.Error("streaming server stopped", "err", err)
		}
	}()
	go func() { defer s.wg.Done(); s.watchOOM() }()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-s.stopCh; cancel() }()
		s.images.Watch(ctx)
	}()
	go func() { defer s.wg.Done(); s.retryTeardowns() }()
	s.cni.watch(s.stopCh)
}

// Close stops the background loops and the containerd connection. Running
// containers are not touched: a restarted berth-cri picks them up again.
func (s *Service) Close() {
	close(s.stopCh)
	_ = s.stream.Stop()
	s.cni.close()
	s.wg.Wait()
	s.client.Close()
}

// nsCtx puts berth-cri's containerd namespace on a context.
func (s *Service) nsCtx(ctx context.Context) context.Context {
	return withNamespace(ctx, s.cfg.ContainerdNamespace)
}

func (s *Service) sandboxRootDir(id string) string {
	return filepath.Join(s.cfg.RootDir, "sandboxes", id)
}
func (s *Service) sandboxStateDir(id string) string {
	return filepath.Join(s.cfg.StateDir, "sandboxes", id)
}
func (s *Service) containerStateDir(id string) string {
	return filepath.Join(s.cfg.StateDir, "containers", id)
}

// waitCtx is the context for task.Wait: it must outlive the RPC that
// started the task, or the exit channel fires when the request ends.
func (s *Service) waitCtx() context.Context {
	return s.nsCtx(context.Background())
}
