package csi_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berthdev/berth/test/csienv"
)

const mib = 1 << 20

// TestQuota fills a volume past its capacity in each way a file can grow:
// dd (write), fallocate and truncate. Each gets ENOSPC, and a neighbour
// volume is unaffected.
func TestQuota(t *testing.T) {
	p := csienv.Start(t)
	_, a := p.Volume("quota-a", 8*mib)
	_, b := p.Volume("quota-b", 8*mib)

	out, err := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(a, "big"), "bs=1M", "count=20").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("dd past capacity: err=%v, want ENOSPC; output:\n%s", err, out)
	}
	st, err := os.Stat(filepath.Join(a, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 8*mib || st.Size() < 7*mib {
		t.Errorf("dd wrote %d bytes into an 8 MiB volume, want just under 8 MiB", st.Size())
	}

	for _, tc := range []struct {
		name string
		grow func(f *os.File) error
	}{
		{"fallocate", func(f *os.File) error { return syscall.Fallocate(int(f.Fd()), 0, 0, 16*mib) }},
		{"truncate", func(f *os.File) error { return f.Truncate(16 * mib) }},
		{"write", func(f *os.File) error { _, err := f.Write(make([]byte, mib)); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(a, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := tc.grow(f); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("%s past capacity: %v, want ENOSPC", tc.name, err)
			}
		})
	}

	// The neighbour takes its full capacity.
	data := bytes.Repeat([]byte("berth"), 7*mib/5)
	if err := os.WriteFile(filepath.Join(b, "data"), data, 0o644); err != nil {
		t.Fatalf("neighbour volume: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(b, "data"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("neighbour read back: %v (equal=%v)", err, bytes.Equal(got, data))
	}

	// Removing the big file frees its space for new writes.
	if err := os.Remove(filepath.Join(a, "big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "again"), make([]byte, 6*mib), 0o644); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(a, &sfs); err != nil {
		t.Fatal(err)
	}
	if total := int64(sfs.Blocks) * sfs.Bsize; total != 8*mib {
		t.Errorf("statfs reports %d bytes total, want the capacity %d", total, 8*mib)
	}
}

// TestExpandOnline raises a published volume's capacity through the
// controller and the node, and a write that failed before then fits.
func TestExpandOnline(t *testing.T) {
	p := csienv.Start(t)
	id, dir := p.Volume("expand", 4*mib)
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 6*mib), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("6 MiB into 4 MiB: %v, want ENOSPC", err)
	}
	ctx := csienv.Ctx(t)
	r, err := p.Controller.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 16 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetCapacityBytes() != 16*mib || !r.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume = %v", r)
	}
	if _, err := p.Node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: dir,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 16 * mib}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 12*mib), 0o644); err != nil {
		t.Fatalf("12 MiB after expanding to 16 MiB: %v", err)
	}
	stats, err := p.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := stats.GetUsage()[0].GetTotal(); got != 16*mib {
		t.Errorf("stats total = %d, want %d", got, 16*mib)
	}
}
