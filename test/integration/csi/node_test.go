package csi_test

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

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

// TestVolumeCondition aborts a volume's FUSE connection (as a dying
// server would leave it) and checks that both the legacy volume condition
// of NodeGetVolumeStats and NodeGetVolumeHealth report it.
func TestVolumeCondition(t *testing.T) {
	p := csienv.Start(t)
	id, dir := p.Volume("condition", 8*mib)
	ctx := csienv.Ctx(t)
	condition := func() (abnormal bool, msg string) {
		r, err := p.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: dir})
		if err != nil {
			t.Fatal(err)
		}
		// volume_condition is field 2, outside the 1.13 bindings.
		b := r.ProtoReflect().GetUnknown()
		num, typ, n := protowire.ConsumeTag(b)
		if num != 2 || typ != protowire.BytesType {
			t.Fatalf("no volume_condition in NodeGetVolumeStats (unknown fields %x)", b)
		}
		cond, _ := protowire.ConsumeBytes(b[n:])
		for len(cond) > 0 {
			num, typ, n := protowire.ConsumeTag(cond)
			cond = cond[n:]
			switch {
			case num == 1 && typ == protowire.VarintType:
				v, m := protowire.ConsumeVarint(cond)
				abnormal, cond = v != 0, cond[m:]
			case num == 2 && typ == protowire.BytesType:
				v, m := protowire.ConsumeString(cond)
				msg, cond = v, cond[m:]
			default:
				t.Fatalf("unexpected field %d in volume_condition", num)
			}
		}
		return abnormal, msg
	}
	health := func() []*csi.VolumeHealth_VolumeHealthEntry {
		r, err := p.Node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: dir})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetVolumeHealth().GetHealthStatuses()
	}
	if abnormal, msg := condition(); abnormal {
		t.Fatalf("healthy volume reported abnormal: %s", msg)
	}
	if h := health(); len(h) != 0 {
		t.Fatalf("healthy volume has health entries: %v", h)
	}
	csienv.AbortFUSE(dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		abnormal, msg := condition()
		if abnormal {
			t.Logf("condition after abort: %s", msg)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("aborted connection still reported normal")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h := health(); len(h) != 1 || h[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
		t.Errorf("health after abort = %v, want one INACCESSIBLE entry", h)
	}
}

// TestReadOnlyAndShared publishes one volume at two targets in a
// multi-writer mode (ReadWriteMany within the node) and at a third one
// read-only.
func TestReadOnlyAndShared(t *testing.T) {
	p := csienv.Start(t)
	id, first := p.Volume("shared", 8*mib)
	ctx := csienv.Ctx(t)
	staging := filepath.Join(p.Dir, "staging", id)
	rwx := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
	second := filepath.Join(p.Dir, "pods", "second", "mount")
	ro := filepath.Join(p.Dir, "pods", "ro", "mount")
	if _, err := p.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		TargetPath: second, VolumeCapability: rwx}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		TargetPath: ro, VolumeCapability: rwx, Readonly: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(first, "x"), []byte("from first"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(second, "x")); err != nil || string(b) != "from first" {
		t.Errorf("second target reads %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(ro, "y"), []byte("no"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through the read-only target: %v, want EROFS", err)
	}
	if b, err := os.ReadFile(filepath.Join(ro, "x")); err != nil || string(b) != "from first" {
		t.Errorf("read-only target reads %q, %v", b, err)
	}
	// Publishing the same target again read-write conflicts.
	_, err := p.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		TargetPath: ro, VolumeCapability: rwx})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("re-publish read-only target as read-write: %v, want AlreadyExists", err)
	}
}

// TestRegistrationAndHealth plays kubelet's plugin watcher against the
// registration socket, and a liveness probe against /healthz.
func TestRegistrationAndHealth(t *testing.T) {
	reg := t.TempDir()
	p := csienv.Start(t, "--registration-dir="+reg, "--kubelet-csi-endpoint=/var/lib/kubelet/plugins/berth.csi.dev/csi.sock")
	sock := filepath.Join(reg, "berth.csi.dev-reg.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := registerapi.NewRegistrationClient(conn)
	ctx := csienv.Ctx(t)
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "berth.csi.dev" ||
		info.GetEndpoint() != "/var/lib/kubelet/plugins/berth.csi.dev/csi.sock" || len(info.GetSupportedVersions()) == 0 {
		t.Errorf("GetInfo = %v", info)
	}
	if _, err := c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Log(), "kubelet registered the plugin") {
		t.Error("registration status not logged")
	}
	resp, err := http.Get("http://" + p.Metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d with a usable store", resp.StatusCode)
	}
	// An unusable store turns the probe and /healthz not-ready.
	if err := os.Chmod(filepath.Join(p.Root, ".tmp"), 0); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(p.Root, ".tmp"))
	os.WriteFile(filepath.Join(p.Root, ".tmp"), nil, 0o644) // a file where the directory was
	resp, err = http.Get("http://" + p.Metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz = %d with a broken store, want 503", resp.StatusCode)
	}
	pr, err := p.Identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || pr.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want not ready", pr, err)
	}
	os.Remove(filepath.Join(p.Root, ".tmp"))
	os.Mkdir(filepath.Join(p.Root, ".tmp"), 0o700)
}
