package driver

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthdev/berth/csi/fusefs"
	"github.com/berthdev/berth/csi/store"
)

// Parameters a StorageClass may set. Keys under csi.storage.k8s.io/ come
// from the provisioner (PVC/PV names) and are accepted as they are.
const (
	ParamMaxInodes = "maxInodes"
)

// minCapacity is the smallest volume: a few blocks for directories.
const minCapacity = 1 << 20

func (d *Driver) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// localVolume reads the record of a volume of this node; field names the
// request field the ID came from, for the NotFound message.
func (d *Driver) localVolume(field string, id store.ID) (*store.Volume, error) {
	v, err := d.store.Volume(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "%s %q: no such volume on node %s", field, id, d.cfg.NodeID)
	}
	return v, nil
}

// capacityFor turns a capacity range into a size: the required bytes
// rounded up to a block, the default when nothing is asked.
func (d *Driver) capacityFor(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, status.Error(codes.InvalidArgument, "capacity_range: bytes must not be negative")
	}
	if lim > 0 && req > lim {
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d exceeds limit_bytes %d", req, lim)
	}
	size := req
	if size == 0 {
		size = d.cfg.DefaultCapacity
		if lim > 0 && size > lim {
			size = lim
		}
	}
	size = max(size, minCapacity)
	size = (size + 4095) / 4096 * 4096
	if lim > 0 && size > lim {
		return 0, status.Errorf(codes.OutOfRange, "capacity_range: limit_bytes %d is below the smallest volume (%d bytes, whole 4 KiB blocks)", lim, size)
	}
	return size, nil
}

func maxInodesFor(capacity int64, params map[string]string) (int64, error) {
	if v, ok := params[ParamMaxInodes]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 16 {
			return 0, status.Errorf(codes.InvalidArgument, "parameters.%s: %q is not an integer >= 16", ParamMaxInodes, v)
		}
		return n, nil
	}
	// One inode per 4 KiB, as mkfs.ext4's default ratio gives roughly.
	return max(capacity/4096, 1024), nil
}

func checkParameters(params map[string]string) error {
	for k := range params {
		if k == ParamMaxInodes || strings.HasPrefix(k, "csi.storage.k8s.io/") {
			continue
		}
		return status.Errorf(codes.InvalidArgument, "parameters: unknown key %q (known: %s)", k, ParamMaxInodes)
	}
	return nil
}

// checkTopology refuses a volume that must live on another node.
func (d *Driver) checkTopology(req *csi.TopologyRequirement) error {
	if len(req.GetRequisite()) == 0 {
		return nil
	}
	for _, t := range req.GetRequisite() {
		if n, ok := t.GetSegments()[TopologyKey]; ok && n == d.cfg.NodeID {
			return nil
		}
	}
	return status.Errorf(codes.ResourceExhausted, "accessibility_requirements: node %q is not among the requisite topologies", d.cfg.NodeID)
}

func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if err := store.ValidName(req.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name %v", err)
	}
	if err := checkCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if err := checkParameters(req.GetParameters()); err != nil {
		return nil, err
	}
	if err := d.checkTopology(req.GetAccessibilityRequirements()); err != nil {
		return nil, err
	}
	capacity, err := d.capacityFor(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	maxInodes, err := maxInodesFor(capacity, req.GetParameters())
	if err != nil {
		return nil, err
	}
	defer d.lock("name/" + req.GetName())()

	var fill func(string) error
	var source string
	if src := req.GetVolumeContentSource(); src != nil {
		source, fill, err = d.contentSource(src, capacity)
		if err != nil {
			return nil, err
		}
	}
	var fsStat unix.Statfs_t
	if err := unix.Statfs(d.cfg.Root, &fsStat); err == nil {
		if total := int64(fsStat.Blocks) * fsStat.Bsize; capacity > total {
			return nil, status.Errorf(codes.OutOfRange, "capacity_range: %d bytes is more than the node's whole store (%d bytes)", capacity, total)
		}
	}
	v, created, err := d.store.CreateVolume(store.Volume{
		Name: req.GetName(), Capacity: capacity, MaxInodes: maxInodes,
		Parameters: req.GetParameters(), Source: source,
	}, fill)
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "name %q: a volume of that name exists with a different size or source", req.GetName())
	}
	if err != nil {
		return nil, errStatus(err, codes.Internal, "create volume %q", req.GetName())
	}
	if created {
		d.log.Info("volume created", "volume", v.ID, "name", v.Name, "capacity", v.Capacity, "source", v.Source)
	}
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(v, req.GetVolumeContentSource())}, nil
}

// contentSource validates a snapshot or volume source and returns the
// function that copies it into the new volume.
func (d *Driver) contentSource(src *csi.VolumeContentSource, capacity int64) (string, func(string) error, error) {
	var id store.ID
	var err error
	var size int64
	switch {
	case src.GetSnapshot() != nil:
		id, err = parseSnapshotID("volume_content_source.snapshot.snapshot_id", src.GetSnapshot().GetSnapshotId())
		if err != nil {
			return "", nil, err
		}
		if err := d.sourceHere("volume_content_source.snapshot.snapshot_id", id); err != nil {
			return "", nil, err
		}
		sn, err := d.store.Snapshot(id)
		if err != nil {
			return "", nil, status.Errorf(codes.NotFound, "volume_content_source.snapshot.snapshot_id %q: no such snapshot on node %s", id, d.cfg.NodeID)
		}
		size = sn.Size
	case src.GetVolume() != nil:
		id, err = parseVolumeID("volume_content_source.volume.volume_id", src.GetVolume().GetVolumeId())
		if err != nil {
			return "", nil, err
		}
		if err := d.sourceHere("volume_content_source.volume.volume_id", id); err != nil {
			return "", nil, err
		}
		v, err := d.localVolume("volume_content_source.volume.volume_id", id)
		if err != nil {
			return "", nil, err
		}
		size = v.Capacity
		if sv := d.stagedVolume(v.ID); sv != nil {
			size, _, _, _ = sv.fs.Quota().Usage()
		} else if v.Used > 0 {
			size = v.Used
		}
	default:
		return "", nil, status.Error(codes.InvalidArgument, "volume_content_source: neither snapshot nor volume is set")
	}
	if size > capacity {
		return "", nil, status.Errorf(codes.OutOfRange, "capacity_range: %d bytes cannot hold the source's %d bytes", capacity, size)
	}
	dir := d.store.DataDir(id)
	return id.String(), func(dst string) error { return store.CopyTree(dir, dst) }, nil
}

// sourceHere refuses a source that lives on another node with
// ResourceExhausted, not NotFound: the source exists, just not here.
// external-provisioner answers ResourceExhausted for a volume waiting for
// its first consumer by dropping the selected node, so the scheduler picks
// again, while NotFound would fail the claim for good. The scheduler does
// not know where the source lives, though, and may pick this node again:
// pods of restored or cloned claims belong on the source's node
// (docs/csi.md). A source ID names its node, so no other node needs asking.
func (d *Driver) sourceHere(field string, id store.ID) error {
	if d.store.Local(id) {
		return nil
	}
	return status.Errorf(codes.ResourceExhausted, "%s %q lives on node %s, and this is node %s: the new volume must be provisioned there", field, id, id.Node, d.cfg.NodeID)
}

func (d *Driver) csiVolume(v *store.Volume, src *csi.VolumeContentSource) *csi.Volume {
	return &csi.Volume{
		VolumeId:      v.ID,
		CapacityBytes: v.Capacity,
		ContentSource: src,
		AccessibleTopology: []*csi.Topology{{Segments: map[string]string{
			TopologyKey: d.cfg.NodeID,
		}}},
	}
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	id, err := store.ParseID(store.KindVolume, req.GetVolumeId())
	if err != nil || !d.store.Local(id) {
		// Deleting what does not exist here succeeds (CSI: idempotent).
		return &csi.DeleteVolumeResponse{}, nil
	}
	defer d.lock(id.String())()
	if sv := d.stagedVolume(id.String()); sv != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "volume_id %q is still staged at %s", id, sv.rec.StagingPath)
	}
	if err := d.store.DeleteVolume(id); err != nil {
		return nil, errStatus(err, codes.Internal, "delete volume %s", id)
	}
	d.log.Info("volume deleted", "volume", id.String())
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if err := checkCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if _, err := d.localVolume("volume_id", id); err != nil {
		return nil, err
	}
	if err := checkParameters(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// page applies CSI pagination to n sorted items: the token is the index
// of the next item.
func page(n int, token string, maxEntries int32) (start, end int, next string, err error) {
	if maxEntries < 0 {
		return 0, 0, "", status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	if token != "" {
		i, perr := strconv.Atoi(token)
		if perr != nil || i < 0 || i > n {
			return 0, 0, "", status.Errorf(codes.Aborted, "starting_token %q is not valid", token)
		}
		start = i
	}
	end = n
	if maxEntries > 0 && start+int(maxEntries) < n {
		end = start + int(maxEntries)
		next = strconv.Itoa(end)
	}
	return start, end, next, nil
}

func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	vols, err := d.store.Volumes()
	if err != nil {
		return nil, errStatus(err, codes.Internal, "list volumes")
	}
	start, end, next, err := page(len(vols), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range vols[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: d.csiVolume(v, nil)})
	}
	return resp, nil
}

// GetCapacity reports the backing filesystem's free space: volumes are
// thin, so this is what new volumes can still fill.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil {
		if n, ok := t.GetSegments()[TopologyKey]; ok && n != d.cfg.NodeID {
			return &csi.GetCapacityResponse{}, nil
		}
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if err := checkCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
			return nil, err
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.cfg.Root, &st); err != nil {
		return nil, errStatus(err, codes.Internal, "statfs %s", d.cfg.Root)
	}
	avail := int64(st.Bavail) * st.Bsize
	return &csi.GetCapacityResponse{AvailableCapacity: avail, MaximumVolumeSize: nil}, nil
}

func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if err := store.ValidName(req.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name %v", err)
	}
	src, err := parseVolumeID("source_volume_id", req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	defer d.lock("snap/" + req.GetName())()
	v, err := d.store.Volume(src)
	if err != nil {
		// A snapshot of that name may exist for another source.
		if sn, serr := d.store.Snapshot(d.store.IDFor(store.KindSnapshot, req.GetName())); serr == nil && sn.Source != src.String() {
			return nil, status.Errorf(codes.AlreadyExists, "name %q: a snapshot of that name exists for volume %s", req.GetName(), sn.Source)
		}
		return nil, status.Errorf(codes.NotFound, "source_volume_id %q: no such volume on node %s", src, d.cfg.NodeID)
	}
	size := v.Used
	if sv := d.stagedVolume(v.ID); sv != nil {
		size, _, _, _ = sv.fs.Quota().Usage()
	} else if used, _, err := fusefs.Measure(d.store.DataDir(src)); err == nil {
		size = used
	}
	sn, created, err := d.store.CreateSnapshot(req.GetName(), src, size)
	if errors.Is(err, store.ErrExists) {
		return nil, status.Errorf(codes.AlreadyExists, "name %q: a snapshot of that name exists for volume %s", req.GetName(), sn.Source)
	}
	if err != nil {
		return nil, errStatus(err, codes.Internal, "snapshot %q", req.GetName())
	}
	if created {
		d.log.Info("snapshot created", "snapshot", sn.ID, "name", sn.Name, "source", sn.Source, "size", sn.Size)
	}
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(sn)}, nil
}

func csiSnapshot(sn *store.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId: sn.ID, SourceVolumeId: sn.Source, SizeBytes: sn.Size,
		CreationTime: timestamppb.New(sn.Created), ReadyToUse: sn.Ready,
	}
}

func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	id, err := store.ParseID(store.KindSnapshot, req.GetSnapshotId())
	if err != nil || !d.store.Local(id) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	defer d.lock(id.String())()
	if err := d.store.DeleteSnapshot(id); err != nil {
		return nil, errStatus(err, codes.Internal, "delete snapshot %s", id)
	}
	d.log.Info("snapshot deleted", "snapshot", id.String())
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id, err := parseSnapshotID("snapshot_id", req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	sn, err := d.store.Snapshot(id)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "snapshot_id %q: no such snapshot on node %s", id, d.cfg.NodeID)
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(sn)}, nil
}

func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	all, err := d.store.Snapshots()
	if err != nil {
		return nil, errStatus(err, codes.Internal, "list snapshots")
	}
	var snaps []*store.Snapshot
	for _, sn := range all {
		if req.GetSnapshotId() != "" && sn.ID != req.GetSnapshotId() {
			continue
		}
		if req.GetSourceVolumeId() != "" && sn.Source != req.GetSourceVolumeId() {
			continue
		}
		snaps = append(snaps, sn)
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].ID < snaps[j].ID })
	start, end, next, err := page(len(snaps), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, sn := range snaps[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(sn)})
	}
	return resp, nil
}

// ControllerExpandVolume records the new size and, when this process
// serves the volume, raises the live limit at once. A volume of another
// node is left to that node's NodeExpandVolume, so a single resizer can
// serve the whole cluster.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	if req.GetVolumeCapability() != nil {
		if err := checkCapability("volume_capability", req.GetVolumeCapability()); err != nil {
			return nil, err
		}
	}
	capacity, err := d.capacityFor(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	if !d.store.Local(id) {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: capacity, NodeExpansionRequired: true}, nil
	}
	defer d.lock(id.String())()
	v, err := d.localVolume("volume_id", id)
	if err != nil {
		return nil, err
	}
	if capacity, err = d.expand(v, capacity); err != nil {
		return nil, err
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: capacity, NodeExpansionRequired: true}, nil
}

// expand raises a volume's capacity (never lowers it) in its record and,
// if it is staged here, in the live quota.
func (d *Driver) expand(v *store.Volume, capacity int64) (int64, error) {
	if capacity <= v.Capacity {
		return v.Capacity, nil
	}
	oldInodes, _ := maxInodesFor(v.Capacity, nil)
	if _, ok := v.Parameters[ParamMaxInodes]; !ok && v.MaxInodes == oldInodes {
		v.MaxInodes, _ = maxInodesFor(capacity, nil)
	}
	v.Capacity = capacity
	if err := d.store.SaveVolume(v); err != nil {
		return 0, errStatus(err, codes.Internal, "save volume %s", v.ID)
	}
	if sv := d.stagedVolume(v.ID); sv != nil {
		sv.fs.Quota().SetCapacity(v.Capacity, v.MaxInodes)
	}
	d.log.Info("volume expanded", "volume", v.ID, "capacity", v.Capacity)
	return v.Capacity, nil
}
