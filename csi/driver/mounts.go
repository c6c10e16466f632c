package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/csi/fdstore"
	"github.com/berthdev/berth/csi/fusefs"
	"github.com/berthdev/berth/csi/store"
	"github.com/berthdev/berth/internal/atomicfile"
	"github.com/berthdev/berth/internal/mountinfo"
)

// stageRecord is what the node plugin keeps about a staged volume, in the
// state directory and, with the /dev/fuse descriptor, in the fd store.
type stageRecord struct {
	VolumeID    string `json:"volumeID"`
	StagingPath string `json:"stagingPath"`
	Init        []byte `json:"init"` // the kernel's INIT, for a takeover
	Ephemeral   bool   `json:"ephemeral,omitempty"`
	// Targets are the bind mounts of the volume, and whether each is
	// read-only; a remount after a lost connection redoes them.
	Targets map[string]bool `json:"targets,omitempty"`
	// Exclusive is the target of a SINGLE_NODE_SINGLE_WRITER publish,
	// which allows no second target.
	Exclusive string `json:"exclusive,omitempty"`
}

type stagedVolume struct {
	rec   stageRecord
	id    store.ID
	fs    *fusefs.FS
	mount *fusefs.Mount
}

func (d *Driver) stagedVolume(id string) *stagedVolume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.staged[id]
}

func (d *Driver) stagePath(id store.ID) string {
	return filepath.Join(d.cfg.StateDir, "staged", id.Hex+".json")
}

// persist saves the stage record, durably (a restart takes the volume
// over from it), and the volume's measured usage.
func (sv *stagedVolume) persist(d *Driver) {
	b, _ := json.Marshal(sv.rec)
	if err := atomicfile.WriteBytes(d.stagePath(sv.id), b, 0o600); err != nil {
		d.log.Error("stage record not saved; a restart will not find this volume", "volume", sv.rec.VolumeID, "err", err)
	}
	if v, err := d.store.Volume(sv.id); err == nil {
		v.Used, _, v.Inodes, _ = sv.fs.Quota().Usage()
		if err := d.store.SaveVolume(v); err != nil {
			d.log.Warn("volume usage not saved", "volume", v.ID, "err", err)
		}
	}
}

// newFS builds a volume's filesystem with its usage measured afresh, which
// is how usage is rebuilt after any restart.
func (d *Driver) newFS(v *store.Volume, id store.ID) (*fusefs.FS, error) {
	dir := d.store.DataDir(id)
	used, inodes, err := fusefs.Measure(dir)
	if err != nil {
		return nil, err
	}
	q := fusefs.NewQuota(v.Capacity, v.MaxInodes, used, inodes)
	return fusefs.New(dir, q, fusefs.Options{Passthrough: d.cfg.Passthrough, Logger: d.log.With("volume", v.ID)})
}

func (d *Driver) mountConfig(id string) fusefs.MountConfig {
	c := d.cfg.Mount
	c.Name = "berth-csi:" + id
	return c
}

// stage mounts a volume's filesystem at path and parks its descriptor.
func (d *Driver) stage(v *store.Volume, id store.ID, path string, ephemeral bool) (*stagedVolume, error) {
	fsys, err := d.newFS(v, id)
	if err != nil {
		return nil, err
	}
	m, err := fusefs.MountNew(path, fsys, d.mountConfig(v.ID))
	if err != nil {
		fsys.Close()
		return nil, err
	}
	sv := &stagedVolume{id: id, fs: fsys, mount: m,
		rec: stageRecord{VolumeID: v.ID, StagingPath: path, Init: m.Init, Ephemeral: ephemeral, Targets: map[string]bool{}}}
	d.park(sv)
	d.track(sv)
	return sv, nil
}

// track records a served volume and watches its server.
func (d *Driver) track(sv *stagedVolume) {
	sv.persist(d)
	d.mu.Lock()
	d.staged[sv.rec.VolumeID] = sv
	d.mu.Unlock()
	go d.watch(sv)
}

func (d *Driver) park(sv *stagedVolume) {
	if d.fds == nil {
		return
	}
	if err := d.fds.Put(sv.rec.VolumeID, sv.rec, sv.mount.Dev); err != nil {
		d.log.Warn("fd store: volume will not survive a plugin restart", "volume", sv.rec.VolumeID, "err", err)
	}
}

// watch logs a server that stops while the volume is still staged: the
// kernel aborted the connection, and the volume condition turns abnormal.
func (d *Driver) watch(sv *stagedVolume) {
	<-sv.mount.Done()
	if d.stagedVolume(sv.rec.VolumeID) == sv {
		d.log.Error("FUSE server stopped while the volume is staged", "volume", sv.rec.VolumeID, "staging", sv.rec.StagingPath)
	}
}

// unstage unmounts and forgets a staged volume.
func (d *Driver) unstage(sv *stagedVolume) error {
	for t := range sv.rec.Targets {
		if err := unmountPath(t); err != nil {
			return err
		}
	}
	sv.persist(d) // final usage into the volume record
	d.mu.Lock()
	delete(d.staged, sv.rec.VolumeID)
	d.mu.Unlock()
	if err := sv.mount.Unmount(); err != nil {
		d.mu.Lock()
		d.staged[sv.rec.VolumeID] = sv
		d.mu.Unlock()
		return err
	}
	if d.fds != nil {
		if err := d.fds.Delete(sv.rec.VolumeID); err != nil {
			d.log.Warn("fd store: delete", "volume", sv.rec.VolumeID, "err", err)
		}
	}
	os.Remove(d.stagePath(sv.id))
	return nil
}

// recover takes back every volume an earlier process staged. With its
// descriptor in the fd store and its mount still there, the connection is
// taken over and pods never notice. Otherwise the volume is mounted anew
// and its bind mounts redone, so pods see a fresh filesystem instead of
// "transport endpoint is not connected".
func (d *Driver) recover() {
	held := map[string]fdstore.Entry{}
	if d.fds != nil {
		entries, err := d.fds.List("")
		if err != nil {
			d.log.Warn("fd store: list", "err", err)
		}
		for _, e := range entries {
			held[e.Key] = e
		}
	}
	defer func() {
		for _, e := range held {
			unix.Close(e.Fd)
		}
	}()
	files, _ := filepath.Glob(filepath.Join(d.cfg.StateDir, "staged", "*.json"))
	for _, f := range files {
		var rec stageRecord
		b, err := os.ReadFile(f)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			d.log.Error("unreadable stage record", "file", f, "err", err)
			continue
		}
		if err := d.recoverOne(rec, held); err != nil {
			d.log.Error("could not recover staged volume", "volume", rec.VolumeID, "staging", rec.StagingPath, "err", err)
		}
	}
}

func (d *Driver) recoverOne(rec stageRecord, held map[string]fdstore.Entry) error {
	id, err := store.ParseID(store.KindVolume, rec.VolumeID)
	if err != nil {
		return err
	}
	v, err := d.store.Volume(id)
	if err != nil {
		os.Remove(d.stagePath(id))
		return err
	}
	if rec.Targets == nil {
		rec.Targets = map[string]bool{}
	}
	fsys, err := d.newFS(v, id)
	if err != nil {
		return err
	}
	e, ok := held[rec.VolumeID]
	if ok && mountinfo.TypeAt(rec.StagingPath) == fusefs.FSType {
		m, err := fusefs.Takeover(rec.StagingPath, e.Fd, rec.Init, fsys, d.mountConfig(v.ID))
		if err == nil {
			delete(held, rec.VolumeID)
			d.track(&stagedVolume{rec: rec, id: id, fs: fsys, mount: m})
			d.log.Info("took over live FUSE connection", "volume", v.ID, "staging", rec.StagingPath)
			return nil
		}
		d.log.Warn("takeover failed; remounting", "volume", v.ID, "err", err)
	}
	// Remount: drop the dead mounts, mount afresh, redo the binds.
	for t := range rec.Targets {
		unmountPath(t)
	}
	unmountPath(rec.StagingPath)
	m, err := fusefs.MountNew(rec.StagingPath, fsys, d.mountConfig(v.ID))
	if err != nil {
		fsys.Close()
		return err
	}
	rec.Init = m.Init
	sv := &stagedVolume{rec: rec, id: id, fs: fsys, mount: m}
	for t, ro := range rec.Targets {
		if err := bindMount(rec.StagingPath, t, ro, nil); err != nil {
			d.log.Error("rebind failed", "volume", v.ID, "target", t, "err", err)
			delete(rec.Targets, t)
		}
	}
	d.park(sv)
	d.track(sv)
	d.log.Warn("remounted volume after a lost connection", "volume", v.ID, "staging", rec.StagingPath)
	return nil
}

// bindMount binds src to target, read-only when asked, with the
// capability's mount flags.
func bindMount(src, target string, readOnly bool, flags []string) error {
	var attr unix.MountAttr
	var mf uintptr = unix.MS_BIND | unix.MS_REMOUNT
	for _, f := range flags {
		switch f {
		case "ro":
			readOnly = true
		case "noexec":
			mf |= unix.MS_NOEXEC
			attr.Attr_set |= unix.MOUNT_ATTR_NOEXEC
		case "nosuid":
			mf |= unix.MS_NOSUID
			attr.Attr_set |= unix.MOUNT_ATTR_NOSUID
		case "nodev":
			mf |= unix.MS_NODEV
			attr.Attr_set |= unix.MOUNT_ATTR_NODEV
		case "noatime":
			mf |= unix.MS_NOATIME
			attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
			attr.Attr_set |= unix.MOUNT_ATTR_NOATIME
		case "nodiratime":
			mf |= unix.MS_NODIRATIME
			attr.Attr_set |= unix.MOUNT_ATTR_NODIRATIME
		}
	}
	if readOnly {
		mf |= unix.MS_RDONLY
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	// Attributes go on a detached clone before it is attached: a remount
	// of an attached bind mount changes only this mount namespace's copy
	// (remounts do not propagate), so kubelet on the node would see the
	// target without ro or noatime when this plugin runs in a container
	// with Bidirectional propagation. A mount that arrives with its
	// attributes propagates with them.
	err := attachWithAttrs(src, target, &attr)
	if err == nil || !errors.Is(err, unix.ENOSYS) {
		return err
	}
	// Kernels before 5.12: bind, then remount (right in this namespace).
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if mf != unix.MS_BIND|unix.MS_REMOUNT {
		if err := unix.Mount("", target, "", mf, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
	}
	return nil
}

// attachWithAttrs clones src's mount (open_tree), sets attr on the clone
// (mount_setattr) and attaches it at target (move_mount).
func attachWithAttrs(src, target string, attr *unix.MountAttr) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if attr.Attr_set != 0 || attr.Attr_clr != 0 {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
			return fmt.Errorf("mount_setattr: %w", err)
		}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// unmountPath unmounts every mount stacked at path; a path that is not a
// mount point (or does not exist) is fine.
func unmountPath(path string) error {
	for i := 0; i < 8; i++ {
		err := unix.Unmount(path, 0)
		if err == unix.EBUSY {
			err = unix.Unmount(path, unix.MNT_DETACH)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) stagedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.staged)
}

// repark hands the fd store every descriptor it lacks. A restarted store
// (its DaemonSet updated, its pod evicted) starts empty; until the plugin
// re-parks, the connections live only as long as this process.
func (d *Driver) repark() {
	if d.fds == nil {
		return
	}
	keys, err := d.fds.Keys()
	if err != nil {
		d.log.Debug("fd store unreachable", "err", err)
		return
	}
	have := map[string]bool{}
	for _, k := range keys {
		have[k] = true
	}
	d.mu.Lock()
	var missing []*stagedVolume
	for id, sv := range d.staged {
		if !have[id] {
			missing = append(missing, sv)
		}
	}
	d.mu.Unlock()
	for _, sv := range missing {
		d.park(sv)
		d.log.Info("re-parked FUSE descriptor in the fd store", "volume", sv.rec.VolumeID)
	}
}
