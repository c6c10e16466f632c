package images

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const snapshotterPluginType = "io.containerd.snapshotter.v1"

// fsInfoState caches what ImageFsInfo can reuse between calls.
type fsInfoState struct {
	mu   sync.Mutex
	root string // snapshotter root; fixed for the daemon's lifetime
	// committed memoises the usage of committed snapshots, keyed by name and
	// creation time: their content never changes, and measuring them is a
	// directory walk in overlayfs. Active snapshots (container writable
	// layers) are measured on every call.
	committed map[snapshotKey]snapshots.Usage

	calls flightGroup[fsUsage]
}

type snapshotKey struct {
	name    string
	created time.Time
}

type fsUsage struct{ bytes, inodes uint64 }

// ImageFsInfo reports the snapshotter's filesystem: its root as the
// mountpoint and the bytes and inodes used by all snapshots of the
// namespace (image layers and container writable layers, as containerd
// counts them).
func (s *Service) ImageFsInfo(ctx context.Context, _ *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	ctx = s.ctx(ctx)
	root, err := s.snapshotterRoot(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	// kubelet's eviction manager and stats both call this; concurrent
	// calls share one walk.
	u, err := s.fsinfo.calls.do(ctx, "", s.snapshotUsage)
	if err != nil {
		return nil, grpcError(err)
	}
	fs := &runtime.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtime.FilesystemIdentifier{Mountpoint: root},
		UsedBytes:  &runtime.UInt64Value{Value: u.bytes},
		InodesUsed: &runtime.UInt64Value{Value: u.inodes},
	}
	// ContainerFilesystems stays empty, as in containerd: the API defines
	// empty as "containers live on the image filesystem", which is the case
	// (writable layers are snapshots of the same snapshotter).
	return &runtime.ImageFsInfoResponse{ImageFilesystems: []*runtime.FilesystemUsage{fs}}, nil
}

// SnapshotterRoot is the directory the snapshotter keeps its data in:
// the filesystem of both image layers and container writable layers.
func (s *Service) SnapshotterRoot(ctx context.Context) (string, error) {
	return s.snapshotterRoot(s.ctx(ctx))
}

// snapshotterRoot asks containerd's introspection service where the
// snapshotter keeps its data (the "root" export of the plugin). The answer
// is cached once found.
func (s *Service) snapshotterRoot(ctx context.Context) (string, error) {
	s.fsinfo.mu.Lock()
	root := s.fsinfo.root
	s.fsinfo.mu.Unlock()
	if root != "" {
		return root, nil
	}
	filter := fmt.Sprintf("type==%q,id==%q", snapshotterPluginType, s.opts.Snapshotter)
	resp, err := s.client.IntrospectionService().Plugins(ctx, filter)
	if err != nil {
		return "", fmt.Errorf("introspect snapshotter %q: %w", s.opts.Snapshotter, err)
	}
	for _, p := range resp.GetPlugins() {
		if p.GetType() == snapshotterPluginType && p.GetID() == s.opts.Snapshotter {
			if root = p.GetExports()["root"]; root != "" {
				break
			}
		}
	}
	if root == "" {
		return "", fmt.Errorf("snapshotter %q is not loaded in containerd or exports no root: %w", s.opts.Snapshotter, errdefs.ErrFailedPrecondition)
	}
	s.fsinfo.mu.Lock()
	s.fsinfo.root = root
	s.fsinfo.mu.Unlock()
	return root, nil
}

// snapshotUsage sums Usage over every snapshot of the namespace.
func (s *Service) snapshotUsage(ctx context.Context) (fsUsage, error) {
	sn := s.client.SnapshotService(s.opts.Snapshotter)
	var infos []snapshots.Info
	// Usage is not called inside Walk: Walk holds containerd's metadata
	// read lock for its whole duration, and Usage of an active snapshot is
	// a directory walk.
	if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		infos = append(infos, info)
		return nil
	}); err != nil {
		return fsUsage{}, fmt.Errorf("walk snapshots of %q: %w", s.opts.Snapshotter, err)
	}

	s.fsinfo.mu.Lock()
	memo := s.fsinfo.committed
	s.fsinfo.mu.Unlock()
	next := make(map[snapshotKey]snapshots.Usage, len(memo))

	var total fsUsage
	for _, info := range infos {
		key := snapshotKey{info.Name, info.Created}
		u, ok := memo[key]
		if !ok || info.Kind != snapshots.KindCommitted {
			var err error
			u, err = sn.Usage(ctx, info.Name)
			if errdefs.IsNotFound(err) {
				continue // removed since the walk
			}
			if err != nil {
				return fsUsage{}, fmt.Errorf("usage of snapshot %q: %w", info.Name, err)
			}
		}
		if info.Kind == snapshots.KindCommitted {
			next[key] = u
		}
		total.bytes += uint64(max(u.Size, 0))
		total.inodes += uint64(max(u.Inodes, 0))
	}
	// Replacing the memo drops snapshots that no longer exist.
	s.fsinfo.mu.Lock()
	s.fsinfo.committed = next
	s.fsinfo.mu.Unlock()
	return total, nil
}
