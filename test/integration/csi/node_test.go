package csi_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berthdev/berth/test/csienv"
)

// TestEphemeralInline publishes an inline ephemeral volume the way kubelet
// does (no staging, a volume context), checks its size limit, and checks
// that unpublishing deletes it.
func TestEphemeralInline(t *testing.T) {
	p := csienv.Start(t)
	ctx := csienv.Ctx(t)
	target := filepath.Join(p.Dir, "pods", "eph", "mount")
	req := &csi.NodePublishVolumeRequest{VolumeId: "csi-0123456789abcdef", TargetPath: target,
		VolumeCapability: csienv.MountCap(),
		VolumeContext:    map[string]string{"csi.storage.k8s.io/ephemeral": "true", "size": "8Mi"}}
	for i := 0; i < 2; i++ { // the second call is a retry
		if _, err := p.Node.NodePublishVolume(ctx, req); err != nil {
			t.Fatalf("publish #%d: %v", i+1, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "f"), make([]byte, 10*mib), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("10 MiB into an 8Mi ephemeral volume: %v, want ENOSPC", err)
	}
	vols, err := p.Controller.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(vols.GetEntries()) != 1 {
		t.Fatalf("ListVolumes = %v, %v; want the ephemeral volume", vols, err)
	}
	if _, err := p.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	vols, _ = p.Controller.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if len(vols.GetEntries()) != 0 {
		t.Errorf("ephemeral volume still listed after unpublish: %v", vols.GetEntries())
	}
	if m := csienv.MountsUnder(p.Dir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := p.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target}); err != nil {
		t.Errorf("repeated unpublish: %v", err)
	}
}

// TestOwnership checks what fsGroupPolicy File relies on: kubelet chowns
// the volume to the pod's fsGroup and sets the setgid bit, and files a
// non-root pod creates are its own and inherit that group.
func TestOwnership(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	p := csienv.Start(t)
	_, dir := p.Volume("owners", 8*mib)
	// A container reaches the volume at its own mount point; here the pod
	// user walks the test's directories, so open them up.
	for d := filepath.Dir(dir); len(d) >= len(p.Dir); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o775); err != nil {
		t.Fatal(err)
	}
	// What kubelet does for fsGroup 2000.
	if err := os.Chown(shared, 0, 2000); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(shared, 0o2775); err != nil {
		t.Fatal(err)
	}
	asPod := func(args ...string) error {
		cmd := exec.Command("setpriv", append([]string{"--reuid=1000", "--regid=3000", "--groups=2000", "--"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("%v: %s", args, out)
		}
		return err
	}
	if err := asPod("sh", "-c", "echo hi > "+filepath.Join(shared, "mine")); err != nil {
		t.Fatalf("pod user could not write into the fsGroup directory: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(shared, "mine"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 2000 {
		t.Errorf("file created by uid 1000 in a setgid group-2000 directory is %d:%d, want 1000:2000", st.Uid, st.Gid)
	}
	// default_permissions: the kernel enforces modes for the pod user.
	if err := os.WriteFile(filepath.Join(dir, "rootonly"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := asPod("cat", filepath.Join(dir, "rootonly")); err == nil {
		t.Error("uid 1000 read a 0600 root file")
	}
}
