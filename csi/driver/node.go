package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berthdev/berth/csi/fusefs"
	"github.com/berthdev/berth/csi/store"
	"github.com/berthdev/berth/internal/mountinfo"
)

// Ephemeral inline volumes: kubelet marks them in the volume context and
// may give a size.
const (
	ctxEphemeral = "csi.storage.k8s.io/ephemeral"
	ctxSize      = "size"
)

func (d *Driver) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		rpcVolumeCondition,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *Driver) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		MaxVolumesPerNode:  d.cfg.MaxVolumes,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: d.cfg.NodeID}},
	}, nil
}

func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	path := req.GetStagingTargetPath()
	if err := checkPath("staging_target_path", path); err != nil {
		return nil, err
	}
	if err := checkCapability("volume_capability", req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer d.lock(id.String())()
	v, err := d.localVolume("volume_id", id)
	if err != nil {
		return nil, err
	}
	if sv := d.stagedVolume(v.ID); sv != nil {
		if sv.rec.StagingPath != path {
			return nil, status.Errorf(codes.AlreadyExists, "volume_id %q is already staged at %s, not %s", id, sv.rec.StagingPath, path)
		}
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if d.stagedCount() >= int(d.cfg.MaxVolumes) {
		return nil, status.Errorf(codes.ResourceExhausted, "node %s already serves %d volumes (--max-volumes)", d.cfg.NodeID, d.cfg.MaxVolumes)
	}
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, errStatus(err, codes.Internal, "staging_target_path %s", path)
	}
	if _, err := d.stage(v, id, path, false); err != nil {
		return nil, errStatus(err, codes.Internal, "stage %s at %s", id, path)
	}
	d.log.Info("volume staged", "volume", v.ID, "staging", path)
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	path := req.GetStagingTargetPath()
	if err := checkPath("staging_target_path", path); err != nil {
		return nil, err
	}
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer d.lock(id.String())()
	sv := d.stagedVolume(id.String())
	if sv == nil {
		// Already unstaged; a leftover mount from a crash goes too.
		if mountinfo.TypeAt(path) == fusefs.FSType {
			unmountPath(path)
		}
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if sv.rec.StagingPath != path {
		return nil, status.Errorf(codes.InvalidArgument, "staging_target_path %s: volume %s is staged at %s", path, id, sv.rec.StagingPath)
	}
	if err := d.unstage(sv); err != nil {
		return nil, errStatus(err, codes.Internal, "unstage %s", id)
	}
	d.log.Info("volume unstaged", "volume", id.String(), "staging", path)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	target := req.GetTargetPath()
	if err := checkPath("target_path", target); err != nil {
		return nil, err
	}
	if err := checkCapability("volume_capability", req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	readOnly := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	flags := req.GetVolumeCapability().GetMount().GetMountFlags()

	var sv *stagedVolume
	if req.GetVolumeContext()[ctxEphemeral] == "true" {
		var err error
		if sv, err = d.ephemeral(req); err != nil {
			return nil, err
		}
	} else {
		id, err := parseVolumeID("volume_id", req.GetVolumeId())
		if err != nil {
			return nil, err
		}
		if err := checkPath("staging_target_path", req.GetStagingTargetPath()); err != nil {
			return nil, err
		}
		if sv = d.stagedVolume(id.String()); sv == nil {
			if _, err := d.localVolume("volume_id", id); err != nil {
				return nil, err
			}
			return nil, status.Errorf(codes.FailedPrecondition, "volume_id %q is not staged (call NodeStageVolume first)", id)
		}
		if sv.rec.StagingPath != req.GetStagingTargetPath() {
			return nil, status.Errorf(codes.InvalidArgument, "staging_target_path %s: volume %s is staged at %s", req.GetStagingTargetPath(), id, sv.rec.StagingPath)
		}
	}
	defer d.lock(sv.rec.VolumeID)()
	if ro, ok := sv.rec.Targets[target]; ok && mountinfo.TypeAt(target) == fusefs.FSType {
		if ro != readOnly {
			return nil, status.Errorf(codes.AlreadyExists, "target_path %s is already published with readonly=%v", target, ro)
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	single := req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	for t := range sv.rec.Targets {
		if t != target && (single || sv.rec.Exclusive != "") {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is published at %s with single-writer access; target_path %s cannot be added", sv.rec.VolumeID, t, target)
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, errStatus(err, codes.Internal, "target_path %s", target)
	}
	if err := bindMount(sv.rec.StagingPath, target, readOnly, flags); err != nil {
		return nil, errStatus(err, codes.Internal, "bind %s to %s", sv.rec.StagingPath, target)
	}
	sv.rec.Targets[target] = readOnly
	if single {
		sv.rec.Exclusive = target
	}
	sv.persist(d)
	d.log.Info("volume published", "volume", sv.rec.VolumeID, "target", target, "readonly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

// ephemeral creates and stages the volume of an inline ephemeral volume;
// kubelet's volume ID becomes the volume's name.
func (d *Driver) ephemeral(req *csi.NodePublishVolumeRequest) (*stagedVolume, error) {
	if err := store.ValidName(req.GetVolumeId()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume_id %v", err)
	}
	capacity := d.cfg.DefaultCapacity
	if s, ok := req.GetVolumeContext()[ctxSize]; ok {
		q, err := resource.ParseQuantity(s)
		if err != nil || q.Value() <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "volume_context.%s: %q is not a positive quantity", ctxSize, s)
		}
		capacity = q.Value()
	}
	capacity, err := d.capacityFor(&csi.CapacityRange{RequiredBytes: capacity})
	if err != nil {
		return nil, err
	}
	name := "ephemeral/" + req.GetVolumeId()
	defer d.lock("name/" + name)()
	maxInodes, _ := maxInodesFor(capacity, nil)
	v, _, err := d.store.CreateVolume(store.Volume{Name: name, Capacity: capacity, MaxInodes: maxInodes, Ephemeral: true}, nil)
	if err != nil {
		return nil, errStatus(err, codes.Internal, "create ephemeral volume for %s", req.GetVolumeId())
	}
	if sv := d.stagedVolume(v.ID); sv != nil {
		return sv, nil
	}
	id, _ := store.ParseID(store.KindVolume, v.ID)
	path := filepath.Join(d.cfg.StateDir, "ephemeral", id.Hex)
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, errStatus(err, codes.Internal, "ephemeral staging path")
	}
	sv, err := d.stage(v, id, path, true)
	if err != nil {
		d.store.DeleteVolume(id)
		return nil, errStatus(err, codes.Internal, "stage ephemeral volume %s", v.ID)
	}
	return sv, nil
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	target := req.GetTargetPath()
	if err := checkPath("target_path", target); err != nil {
		return nil, err
	}
	sv := d.stagedVolume(req.GetVolumeId())
	if sv == nil && store.ValidName(req.GetVolumeId()) == nil {
		sv = d.stagedVolume(d.store.IDFor(store.KindVolume, "ephemeral/"+req.GetVolumeId()).String())
	}
	if sv != nil {
		defer d.lock(sv.rec.VolumeID)()
	}
	if err := unmountPath(target); err != nil {
		return nil, errStatus(err, codes.Internal, "unmount %s", target)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, errStatus(err, codes.Internal, "remove %s", target)
	}
	if sv == nil {
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	delete(sv.rec.Targets, target)
	if sv.rec.Exclusive == target {
		sv.rec.Exclusive = ""
	}
	sv.persist(d)
	d.log.Info("volume unpublished", "volume", sv.rec.VolumeID, "target", target)
	if sv.rec.Ephemeral && len(sv.rec.Targets) == 0 {
		if err := d.unstage(sv); err != nil {
			return nil, errStatus(err, codes.Internal, "unstage ephemeral volume %s", sv.rec.VolumeID)
		}
		os.Remove(sv.rec.StagingPath)
		if err := d.store.DeleteVolume(sv.id); err != nil {
			return nil, errStatus(err, codes.Internal, "delete ephemeral volume %s", sv.rec.VolumeID)
		}
		d.log.Info("ephemeral volume deleted", "volume", sv.rec.VolumeID)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats answers from the quota's accounting, and reports the
// volume abnormal when its FUSE server is gone.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	path := req.GetVolumePath()
	if err := requirePath("volume_path", path); err != nil {
		return nil, err
	}
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	sv := d.stagedVolume(id.String())
	if sv == nil {
		return nil, status.Errorf(codes.NotFound, "volume_id %q is not staged on node %s", id, d.cfg.NodeID)
	}
	if _, ok := sv.rec.Targets[path]; !ok && path != sv.rec.StagingPath {
		return nil, status.Errorf(codes.NotFound, "volume_path %s is neither the staging path nor a target of volume %s", path, id)
	}
	used, capacity, inodes, maxInodes := sv.fs.Quota().Usage()
	abnormal, msg := volumeCondition(sv, path)
	resp := &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: capacity, Used: used, Available: max(capacity-used, 0)},
			{Unit: csi.VolumeUsage_INODES, Total: maxInodes, Used: inodes, Available: max(maxInodes-inodes, 0)},
		},
	}
	setVolumeCondition(resp, abnormal, msg)
	return resp, nil
}

// volumeCondition says whether the volume's FUSE server still serves the
// path.
func volumeCondition(sv *stagedVolume, path string) (abnormal bool, msg string) {
	select {
	case <-sv.mount.Done():
		return true, "FUSE server for the volume has stopped; the mount is disconnected"
	default:
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return true, "volume path: " + err.Error()
	}
	return false, "FUSE server is serving the volume"
}

// NodeGetVolumeHealth is CSI 1.13's health report: no entry while the
// volume is served, INACCESSIBLE when its server is gone.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	sv := d.stagedVolume(id.String())
	if sv == nil {
		return nil, status.Errorf(codes.NotFound, "volume_id %q is not staged on node %s", id, d.cfg.NodeID)
	}
	path := req.GetVolumePublishPath()
	if path == "" {
		path = sv.rec.StagingPath
	} else if _, ok := sv.rec.Targets[path]; !ok && path != sv.rec.StagingPath {
		return nil, status.Errorf(codes.NotFound, "volume_publish_path %s is neither the staging path nor a target of volume %s", path, id)
	}
	h := &csi.VolumeHealth{VolumeId: id.String()}
	if abnormal, msg := volumeCondition(sv, path); abnormal {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: "FUSEServerGone", Message: msg})
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}

// rpcVolumeCondition is VOLUME_CONDITION (4), which CSI 1.13 dropped for
// the volume health RPCs; kubelet still asks for it before reading a
// volume's condition from NodeGetVolumeStats.
const rpcVolumeCondition = csi.NodeServiceCapability_RPC_Type(4)

// setVolumeCondition writes NodeGetVolumeStatsResponse.volume_condition
// (field 2: {bool abnormal = 1; string message = 2}) as the wire carries
// it for kubelet, since the 1.13 Go bindings no longer have the field.
func setVolumeCondition(resp *csi.NodeGetVolumeStatsResponse, abnormal bool, msg string) {
	var cond []byte
	if abnormal {
		cond = protowire.AppendTag(cond, 1, protowire.VarintType)
		cond = protowire.AppendVarint(cond, 1)
	}
	cond = protowire.AppendTag(cond, 2, protowire.BytesType)
	cond = protowire.AppendString(cond, msg)
	var field []byte
	field = protowire.AppendTag(field, 2, protowire.BytesType)
	field = protowire.AppendBytes(field, cond)
	resp.ProtoReflect().SetUnknown(field)
}

func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if err := requirePath("volume_path", req.GetVolumePath()); err != nil {
		return nil, err
	}
	id, err := parseVolumeID("volume_id", req.GetVolumeId())
	if err != nil {
		return nil, err
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
	defer d.lock(id.String())()
	v, err := d.localVolume("volume_id", id)
	if err != nil {
		return nil, err
	}
	if capacity, err = d.expand(v, capacity); err != nil {
		return nil, err
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: capacity}, nil
}
