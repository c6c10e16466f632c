// Package driver is berth-csi's CSI server: identity, controller and node
// services (one file each) over a node-local store whose volumes are
// served as FUSE filesystems.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthdev/berth/csi/fdstore"
	"github.com/berthdev/berth/csi/fusefs"
	"github.com/berthdev/berth/csi/store"
	"github.com/berthdev/berth/internal/rpcmetrics"
)

// Modes of the binary.
const (
	ModeController = "controller"
	ModeNode       = "node"
	ModeAll        = "all"
)

// TopologyKey pins a volume to the node holding its data.
const TopologyKey = "topology.berth.csi.dev/node"

// Config is berth-csi's configuration; cmd/berth-csi fills it from flags.
type Config struct {
	Mode        string
	DriverName  string
	NodeID      string
	Root        string // backing store
	StateDir    string
	MaxVolumes  int64
	Passthrough bool
	// FdStore is the socket of the descriptor holder; empty disables
	// restart survival (volumes are remounted after a restart instead).
	FdStore string
	Mount   fusefs.MountConfig
	Version string
	// DefaultCapacity is used when a request gives no capacity.
	DefaultCapacity int64
}

// Driver implements the CSI Identity, Controller and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	cfg     Config
	log     *slog.Logger
	store   *store.Store
	fds     *fdstore.Client
	metrics *volumeMetrics

	mu      sync.Mutex
	staged  map[string]*stagedVolume // by volume ID
	locks   map[string]*sync.Mutex   // per volume or snapshot name/ID
	locksMu sync.Mutex
	stop    chan struct{}
}

// New opens the store and, in node mode, takes back the volumes an earlier
// process left mounted.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Driver, error) {
	if cfg.DriverName == "" {
		return nil, errors.New("driver name is empty")
	}
	if cfg.DefaultCapacity == 0 {
		cfg.DefaultCapacity = 1 << 30
	}
	if cfg.MaxVolumes == 0 {
		cfg.MaxVolumes = 256
	}
	st, err := store.Open(cfg.Root, cfg.StateDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: log, store: st, staged: map[string]*stagedVolume{}, locks: map[string]*sync.Mutex{}}
	d.metrics = newVolumeMetrics(reg, d)
	if cfg.Mode != ModeController {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, "staged"), 0o700); err != nil {
			return nil, err
		}
		if cfg.FdStore != "" {
			// The client redials on every call, so a store that starts
			// after the plugin is picked up by the re-park loop.
			d.fds = fdstore.NewClient(cfg.FdStore)
			if _, err := d.fds.Keys(); err != nil {
				log.Warn("fd store unavailable: volumes will not survive a plugin restart until it is back", "err", err)
			}
		}
		d.recover()
		d.stop = make(chan struct{})
		go d.reparkLoop()
	}
	return d, nil
}

// reparkInterval is how often the node plugin checks that the fd store
// holds every live connection.
const reparkInterval = 5 * time.Second

func (d *Driver) reparkLoop() {
	t := time.NewTicker(reparkInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.repark()
		}
	}
}

// Close stops nothing that serves pods: mounts stay, so that the next
// process can take them over. It only drops this process's connections.
func (d *Driver) Close() {
	if d.stop != nil {
		close(d.stop)
	}
	if d.fds != nil {
		d.fds.Close()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sv := range d.staged {
		sv.persist(d)
	}
}

// lock serialises requests for one name or ID; a CO retries while the
// first call is still running, and the two must not interleave.
func (d *Driver) lock(key string) func() {
	d.locksMu.Lock()
	m := d.locks[key]
	if m == nil {
		m = &sync.Mutex{}
		d.locks[key] = m
	}
	d.locksMu.Unlock()
	m.Lock()
	return m.Unlock
}

// Listen opens a unix:// or tcp:// endpoint, replacing a stale socket.
func Listen(endpoint string) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return net.Listen("unix", path)
	case "tcp":
		return net.Listen("tcp", u.Host)
	}
	return nil, fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
}

// Server builds the gRPC server with the services the mode asks for.
func (d *Driver) Server(reg prometheus.Registerer) *grpc.Server {
	m := rpcmetrics.New(reg, "berth_csi", "CSI")
	g := grpc.NewServer(grpc.UnaryInterceptor(m.Interceptor(d.log)))
	csi.RegisterIdentityServer(g, d)
	if d.cfg.Mode != ModeNode {
		csi.RegisterControllerServer(g, d)
	}
	if d.cfg.Mode != ModeController {
		csi.RegisterNodeServer(g, d)
	}
	return g
}

// Probe checks that the store is usable: its directories exist and take
// a write.
func (d *Driver) probe() error {
	f, err := os.CreateTemp(filepath.Join(d.cfg.Root, ".tmp"), "probe-")
	if err != nil {
		return fmt.Errorf("backing store %s is not writable: %w", d.cfg.Root, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, "volumes")); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return nil
}

// Healthy is the /healthz check.
func (d *Driver) Healthy(ctx context.Context) error { return d.probe() }

func errStatus(err error, code codes.Code, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(code, "%s: %v", fmt.Sprintf(format, args...), err)
}

// parseVolumeID validates a request's volume ID. A malformed ID cannot
// name any volume, so lookups answer NotFound; nothing derived from it
// reaches the filesystem.
func parseVolumeID(field, s string) (store.ID, error) {
	if s == "" {
		return store.ID{}, status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	id, err := store.ParseID(store.KindVolume, s)
	if err != nil {
		return store.ID{}, status.Errorf(codes.NotFound, "%s: %v", field, err)
	}
	return id, nil
}

func parseSnapshotID(field, s string) (store.ID, error) {
	if s == "" {
		return store.ID{}, status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	id, err := store.ParseID(store.KindSnapshot, s)
	if err != nil {
		return store.ID{}, status.Errorf(codes.NotFound, "%s: %v", field, err)
	}
	return id, nil
}

// requirePath checks only that a path was given: a path that names no
// volume of ours is answered by the lookup, with NotFound.
func requirePath(field, p string) error {
	if p == "" {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	return nil
}

// checkPath validates a staging or target path from a request.
func checkPath(field, p string) error {
	switch {
	case p == "":
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	case !filepath.IsAbs(p):
		return status.Errorf(codes.InvalidArgument, "%s %q must be absolute", field, p)
	case len(p) > 4096:
		return status.Errorf(codes.InvalidArgument, "%s is longer than 4096 bytes", field)
	case strings.ContainsRune(p, 0):
		return status.Errorf(codes.InvalidArgument, "%s contains NUL", field)
	case filepath.Clean(p) != strings.TrimSuffix(p, "/") && filepath.Clean(p) != p:
		return status.Errorf(codes.InvalidArgument, "%s %q is not a clean path", field, p)
	}
	return nil
}
