package csi_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthdev/berth/test/csienv"
)

// treeSum hashes every path, mode and content under dir.
func treeSum(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			h.Write([]byte(l))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func fill(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "a/b/data"), bytes.Repeat([]byte("snapshot"), 100000), 0o640))
	must(os.WriteFile(filepath.Join(dir, "top"), []byte("top"), 0o600))
	must(os.Symlink("a/b/data", filepath.Join(dir, "link")))
	must(os.Link(filepath.Join(dir, "top"), filepath.Join(dir, "hard")))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	must(f.Truncate(2 * mib))
	_, err = f.WriteAt([]byte("end"), 2*mib-3)
	must(err)
	f.Close()
}

// TestSnapshotRestoreClone checks that a snapshot, a volume restored from
// it and a clone of the live volume hold the same tree, and that each is
// independent of the others afterwards.
func TestSnapshotRestoreClone(t *testing.T) {
	p := csienv.Start(t)
	ctx := csienv.Ctx(t)
	srcID, src := p.Volume("snap-src", 32*mib)
	fill(t, src)
	want := treeSum(t, src)

	snap, err := p.Controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: srcID})
	if err != nil {
		t.Fatal(err)
	}
	if !snap.GetSnapshot().GetReadyToUse() || snap.GetSnapshot().GetSizeBytes() < 800000 {
		t.Errorf("snapshot = %v, want ready with the source's usage as size", snap.GetSnapshot())
	}
	// The source changes after the snapshot.
	if err := os.WriteFile(filepath.Join(src, "top"), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}

	create := func(name string, source *csi.VolumeContentSource) string {
		v, err := p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, VolumeContentSource: source,
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 32 * mib},
			VolumeCapabilities: []*csi.VolumeCapability{csienv.MountCap()}})
		if err != nil {
			t.Fatalf("CreateVolume %s: %v", name, err)
		}
		return p.Publish(v.GetVolume().GetVolumeId())
	}
	restored := create("restored", &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshot().GetSnapshotId()}}})
	if got := treeSum(t, restored); got != want {
		t.Errorf("restored volume differs from the source at snapshot time")
	}
	cloneWant := treeSum(t, src)
	clone := create("clone", &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: srcID}}})
	if got := treeSum(t, clone); got != cloneWant {
		t.Errorf("clone differs from its source")
	}

	// Independence: writes to one show in no other.
	os.WriteFile(filepath.Join(restored, "top"), []byte("restored"), 0o600)
	os.WriteFile(filepath.Join(clone, "top"), []byte("clone"), 0o600)
	for dir, want := range map[string]string{src: "changed", restored: "restored", clone: "clone"} {
		if b, _ := os.ReadFile(filepath.Join(dir, "top")); string(b) != want {
			t.Errorf("%s/top = %q, want %q", dir, b, want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "hard")); string(b) != want {
			t.Errorf("%s/hard (a hard link of top) = %q, want %q", dir, b, want)
		}
	}
	// A restore smaller than the snapshot is refused.
	_, err = p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "too-small",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: mib, LimitBytes: mib},
		VolumeCapabilities: []*csi.VolumeCapability{csienv.MountCap()},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshot().GetSnapshotId()}}}})
	if status.Code(err) != codes.OutOfRange {
		t.Errorf("restore into 1 MiB: %v, want OutOfRange", err)
	}
	// A source on another node (IDs name their node) is ResourceExhausted,
	// so external-provisioner lets the scheduler pick another node, while a
	// missing source on this node stays NotFound.
	sid := snap.GetSnapshot().GetSnapshotId()
	elsewhere := sid[:strings.LastIndex(sid, ".")+1] + "other-node"
	for _, c := range []struct {
		name, id string
		want     codes.Code
	}{
		{"snapshot on another node", elsewhere, codes.ResourceExhausted},
		{"snapshot missing here", "snap-" + strings.Repeat("0", 32) + sid[strings.LastIndex(sid, "."):], codes.NotFound},
	} {
		_, err = p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "restore-" + strings.ReplaceAll(c.name, " ", "-"),
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 * mib},
			VolumeCapabilities: []*csi.VolumeCapability{csienv.MountCap()},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: c.id}}}})
		if status.Code(err) != c.want {
			t.Errorf("%s (%s): %v, want %s", c.name, c.id, err, c.want)
		}
	}
}

// TestStatsAccuracy compares NodeGetVolumeStats with what was written.
func TestStatsAccuracy(t *testing.T) {
	p := csienv.Start(t)
	id, dir := p.Volume("stats", 64*mib)
	ctx := csienv.Ctx(t)
	stats := func() (bytes, inodes int64) {
		r, err := p.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: dir})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range r.GetUsage() {
			if u.GetUnit() == csi.VolumeUsage_BYTES {
				bytes = u.GetUsed()
			} else {
				inodes = u.GetUsed()
			}
		}
		return
	}
	b0, i0 := stats()
	for i := 0; i < 10; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), make([]byte, 3*mib), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	b1, i1 := stats()
	if got, want := b1-b0, int64(30*mib+4096); got < want || got > want+64*1024 {
		t.Errorf("used grew by %d bytes after writing 30 MiB and a directory, want %d (+ metadata ≤ 64 KiB)", got, want)
	}
	if i1-i0 != 11 {
		t.Errorf("inodes grew by %d, want 11", i1-i0)
	}
	for i := 0; i < 10; i++ {
		os.Remove(filepath.Join(dir, fmt.Sprintf("f%d", i)))
	}
	os.Remove(filepath.Join(dir, "d"))
	b2, i2 := stats()
	if b2 != b0 || i2 != i0 {
		t.Errorf("after removing everything: used %d inodes %d, want %d and %d", b2, i2, b0, i0)
	}
	// The measured usage survives a restart of the plugin.
	os.WriteFile(filepath.Join(dir, "keep"), make([]byte, 5*mib), 0o644)
	b3, _ := stats()
	p.KillPlugin()
	p.StartPlugin()
	if b4, _ := stats(); b4 != b3 {
		t.Errorf("used after restart = %d, before = %d", b4, b3)
	}
}

// TestParallelStage stages and publishes 20 volumes at once.
func TestParallelStage(t *testing.T) {
	p := csienv.Start(t)
	const n = 20
	var wg sync.WaitGroup
	dirs := make([]string, n)
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids[i], dirs[i] = p.Volume(fmt.Sprintf("par-%02d", i), 8*mib)
		}(i)
	}
	wg.Wait()
	for i, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "id"), []byte(ids[i]), 0o644); err != nil {
			t.Fatalf("volume %d: %v", i, err)
		}
	}
	for i, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "id")); err != nil || string(b) != ids[i] {
			t.Fatalf("volume %d reads %q, %v", i, b, err)
		}
	}
	if got := len(csienv.MountsUnder(p.Dir)); got != 2*n {
		t.Errorf("%d mounts, want %d (staging + target per volume)", got, 2*n)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); p.Unpublish(ids[i]) }(i)
	}
	wg.Wait()
	if m := csienv.MountsUnder(p.Dir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// TestTraversalRejected sends IDs, names and paths that try to leave the
// backing root, or are oversized; each is refused, and nothing outside
// the root is touched.
func TestTraversalRejected(t *testing.T) {
	p := csienv.Start(t)
	ctx := csienv.Ctx(t)
	canary := filepath.Join(p.Dir, "canary")
	os.MkdirAll(canary, 0o755)
	os.WriteFile(filepath.Join(canary, "keep"), []byte("x"), 0o644)
	long := strings.Repeat("a", 4096)
	for _, id := range []string{
		"../canary", "vol-../../canary", "vol-00000000000000000000000000000000.csitest/../../canary",
		"vol-" + strings.Repeat("0", 32) + "." + long, "/etc/passwd", "vol-\x00", long,
	} {
		if _, err := p.Controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume(%.40q): %v (a malformed ID names no volume: success)", id, err)
		}
		_, err := p.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id,
			StagingTargetPath: filepath.Join(p.Dir, "st"), VolumeCapability: csienv.MountCap()})
		if c := status.Code(err); c != codes.NotFound {
			t.Errorf("NodeStageVolume(%.40q): %v, want NotFound", id, err)
		}
		_, err = p.Controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: id})
		if c := status.Code(err); c != codes.NotFound {
			t.Errorf("CreateSnapshot(source %.40q): %v, want NotFound", id, err)
		}
	}
	for _, name := range []string{long, "", "with\x00nul"} {
		_, err := p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name,
			VolumeCapabilities: []*csi.VolumeCapability{csienv.MountCap()}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("CreateVolume(name %.20q…): %v, want InvalidArgument", name, err)
		}
	}
	// Names that look like paths are only names: the volume lands under
	// the root like any other.
	v, err := p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "../../canary",
		VolumeCapabilities: []*csi.VolumeCapability{csienv.MountCap()}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.GetVolume().GetVolumeId(), "vol-") {
		t.Errorf("volume ID %q", v.GetVolume().GetVolumeId())
	}
	for _, path := range []string{"relative/path", p.Dir + "/a/../../b", "/x\x00y"} {
		_, err := p.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.GetVolume().GetVolumeId(),
			StagingTargetPath: path, VolumeCapability: csienv.MountCap()})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("NodeStageVolume(staging %q): %v, want InvalidArgument", path, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(canary, "keep")); err != nil || string(b) != "x" {
		t.Fatalf("canary outside the root was touched: %v", err)
	}
	// The plugin never follows a volume's symlinks: a snapshot of a
	// volume whose link points at the canary copies the link, not the
	// canary.
	srcID, dir := p.Volume("links", 8*mib)
	if err := os.Symlink(canary, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	snap, err := p.Controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "links-snap", SourceVolumeId: srcID})
	if err != nil {
		t.Fatal(err)
	}
	snapID := snap.GetSnapshot().GetSnapshotId()
	hex := strings.Split(strings.TrimPrefix(snapID, "snap-"), ".")[0]
	info, err := os.Lstat(filepath.Join(p.Root, "snapshots", hex, "escape"))
	if err != nil || info.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("snapshot holds %v (%v), want the symlink itself", info, err)
	}
}
