package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// CSIDriver is berth-csi's driver name (csi/deploy/csidriver.yaml).
const CSIDriver = "berth.csi.dev"

// SnapshotClass is the VolumeSnapshotClass in csi/deploy.
const SnapshotClass = "berth"

var volumeSnapshots = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}

// PVC creates a ReadWriteOnce claim on the default StorageClass (berth),
// optionally from a data source (a VolumeSnapshot or another claim).
func (c *Cluster) PVC(t *testing.T, ns, name, size string, source *corev1.TypedLocalObjectReference) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			DataSource:  source,
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PVC %s: %v", name, err)
	}
}

// dfKiB returns the size of the filesystem at /data in a pod, in KiB.
func (c *Cluster) dfKiB(t *testing.T, ns, pod string) int64 {
	t.Helper()
	out := c.Sh(t, ns, pod, "df -P -k /data | tail -n 1")
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("df: %q", out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df: %q: %v", out, err)
	}
	return n
}

// TestPVC: a claim on the default StorageClass is provisioned by berth-csi,
// mounted with its capacity enforced (df shows it; writing past it fails),
// and its data outlives the pod that wrote it.
func TestPVC(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	ctx := context.Background()
	c.PVC(t, ns, "data", "64Mi", nil)
	token := fmt.Sprint(time.Now().UnixNano())
	w := c.RunPod(t, ns, WithVolume(BusyboxPod("writer", ""), "data"))
	c.Sh(t, ns, "writer", "echo "+token+" > /data/token && sync")
	if got := strings.TrimSpace(c.Sh(t, ns, "writer", "cat /data/token")); got != token {
		t.Fatalf("read back %q, want %q", got, token)
	}
	pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != CSIDriver {
		t.Errorf("PV %s is not a %s volume: %+v", pv.Name, CSIDriver, pv.Spec.PersistentVolumeSource)
	}
	t.Logf("PVC data → PV %s (class %s) on %s", pv.Name, pv.Spec.StorageClassName, w.Spec.NodeName)
	// berth-csi's quota is the capacity; allow for rounding of the size
	// reported in 1K blocks.
	if kib := c.dfKiB(t, ns, "writer"); kib < 60*1024 || kib > 68*1024 {
		t.Errorf("df size %d KiB, want about 64 MiB", kib)
	}
	out, errOut, err := c.Exec(ns, "writer", "sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=100")
	if err == nil || !strings.Contains(out+errOut, "No space left") {
		t.Errorf("writing 100 MiB into a 64 MiB volume: %v; %q %q, want ENOSPC", err, out, errOut)
	}
	c.Sh(t, ns, "writer", "rm -f /data/big")

	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "writer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 2*time.Minute, time.Second, "writer gone", func() (bool, string) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, "writer", metav1.GetOptions{})
		return err != nil, "still there"
	})
	c.RunPod(t, ns, WithVolume(BusyboxPod("reader", ""), "data"))
	if got := strings.TrimSpace(c.Sh(t, ns, "reader", "cat /data/token")); got != token {
		t.Errorf("new pod read %q, want %q", got, token)
	}
}

// TestPVCExpand: growing a mounted claim grows the filesystem the pod sees
// (online expansion through external-resizer and NodeExpandVolume), and
// the new space can be written.
func TestPVCExpand(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	ctx := context.Background()
	c.PVC(t, ns, "grow", "64Mi", nil)
	c.RunPod(t, ns, WithVolume(BusyboxPod("user", ""), "grow"))
	before := c.dfKiB(t, ns, "user")
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`)
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "grow", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	want := resource.MustParse("128Mi")
	Eventually(t, 3*time.Minute, time.Second, "PVC capacity 128Mi", func() (bool, string) {
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "grow", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got := pvc.Status.Capacity[corev1.ResourceStorage]
		return got.Cmp(want) >= 0, fmt.Sprintf("capacity %s, conditions %+v", got.String(), pvc.Status.Conditions)
	})
	t.Logf("PVC status capacity 128Mi after %v (external-resizer, then kubelet's NodeExpandVolume)", time.Since(start).Round(time.Second))
	var after int64
	Eventually(t, 2*time.Minute, 2*time.Second, "df grows in the pod", func() (bool, string) {
		after = c.dfKiB(t, ns, "user")
		return after >= 120*1024, fmt.Sprintf("%d KiB", after)
	})
	t.Logf("df: %d KiB → %d KiB, %v after the patch", before, after, time.Since(start).Round(time.Second))
	// More than the old capacity fits now.
	c.Sh(t, ns, "user", "dd if=/dev/zero of=/data/big bs=1M count=96 2>&1 && sync && rm /data/big")
}

// TestSnapshotRestoreClone: a VolumeSnapshot captures a claim at one
// moment; a claim restored from it holds that content, a claim cloned from
// the source holds the source's content at clone time, and the copies are
// independent of the source.
func TestSnapshotRestoreClone(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	ctx := context.Background()
	c.PVC(t, ns, "src", "64Mi", nil)
	src := c.RunPod(t, ns, WithVolume(BusyboxPod("src", ""), "src"))
	node := src.Spec.NodeName // berth volumes are node-local: copies live on the same node
	sum1 := c.Sh(t, ns, "src", "echo v1 > /data/version && head -c 1048576 /dev/urandom > /data/random && sync && md5sum /data/random | cut -d' ' -f1")

	snap := volumeSnapshot("snap", map[string]any{"persistentVolumeClaimName": "src"})
	if _, err := c.Dynamic.Resource(volumeSnapshots).Namespace(ns).Create(ctx, snap, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VolumeSnapshot (are the snapshot CRDs from csi/deploy/crds installed?): %v", err)
	}
	c.waitSnapshotReady(t, ns, "snap")
	// Change the source after the snapshot: the restore must not see it,
	// the clone must.
	sum2 := c.Sh(t, ns, "src", "echo v2 > /data/version && head -c 1048576 /dev/urandom > /data/random && sync && md5sum /data/random | cut -d' ' -f1")

	// A pre-provisioned snapshot: a VolumeSnapshotContent written by hand
	// from the first snapshot's handle, as an administrator importing a
	// snapshot would. With csi-snapshotter in node-deployment mode nothing
	// handles such a content unless berth-csi labels it for its node
	// (--claim-snapshot-contents); Retain keeps the snapshot for "snap".
	handle := c.snapshotHandle(t, ns, "snap")
	imported := c.importSnapshot(t, ns, "imported", handle)
	if got := imported.GetLabels()["snapshot.storage.kubernetes.io/managed-by"]; got != node {
		t.Errorf("imported content labelled managed-by=%q, want the snapshot's node %q", got, node)
	}

	snapGroup := "snapshot.storage.k8s.io"
	c.PVC(t, ns, "restored", "64Mi", &corev1.TypedLocalObjectReference{APIGroup: &snapGroup, Kind: "VolumeSnapshot", Name: "snap"})
	c.PVC(t, ns, "imported", "64Mi", &corev1.TypedLocalObjectReference{APIGroup: &snapGroup, Kind: "VolumeSnapshot", Name: "imported"})
	c.PVC(t, ns, "clone", "64Mi", &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"})
	c.RunPods(t, ns,
		WithVolume(BusyboxPod("restored", node), "restored"),
		WithVolume(BusyboxPod("imported", node), "imported"),
		WithVolume(BusyboxPod("clone", node), "clone"))
	for _, tc := range []struct {
		pod, version, sum string
	}{
		{"restored", "v1", sum1},
		{"imported", "v1", sum1},
		{"clone", "v2", sum2},
	} {
		t.Run(tc.pod, func(t *testing.T) {
			got := c.Sh(t, ns, tc.pod, "cat /data/version && md5sum /data/random | cut -d' ' -f1")
			if want := tc.version + "\n" + tc.sum; strings.TrimSpace(got) != strings.TrimSpace(want) {
				t.Errorf("read %q, want %q", got, want)
			}
			// Independent: a write to the copy leaves the source alone.
			c.Sh(t, ns, tc.pod, "echo changed-in-"+tc.pod+" > /data/version && sync")
			if v := strings.TrimSpace(c.Sh(t, ns, "src", "cat /data/version")); v != "v2" {
				t.Errorf("source changed to %q after a write to %s", v, tc.pod)
			}
		})
	}
}

var volumeSnapshotContents = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotcontents"}

// volumeSnapshot is a VolumeSnapshot of class SnapshotClass with the given
// spec.source (a claim, or a pre-provisioned content).
func volumeSnapshot(name string, source map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1",
		"kind":       "VolumeSnapshot",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"volumeSnapshotClassName": SnapshotClass, "source": source},
	}}
}

// waitSnapshotReady waits until a VolumeSnapshot is readyToUse.
func (c *Cluster) waitSnapshotReady(t *testing.T, ns, name string) {
	t.Helper()
	Eventually(t, 3*time.Minute, time.Second, "VolumeSnapshot "+name+" readyToUse", func() (bool, string) {
		s, err := c.Dynamic.Resource(volumeSnapshots).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready, _, _ := unstructured.NestedBool(s.Object, "status", "readyToUse")
		status, _, _ := unstructured.NestedMap(s.Object, "status")
		return ready, fmt.Sprintf("status %v", status)
	})
}

// snapshotHandle is the CSI snapshot ID behind a ready VolumeSnapshot.
func (c *Cluster) snapshotHandle(t *testing.T, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	s, err := c.Dynamic.Resource(volumeSnapshots).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	contentName, _, _ := unstructured.NestedString(s.Object, "status", "boundVolumeSnapshotContentName")
	content, err := c.Dynamic.Resource(volumeSnapshotContents).Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("content %q of VolumeSnapshot %s: %v", contentName, name, err)
	}
	handle, _, _ := unstructured.NestedString(content.Object, "status", "snapshotHandle")
	if handle == "" {
		t.Fatalf("content %s has no status.snapshotHandle", contentName)
	}
	return handle
}

// importSnapshot creates a pre-provisioned VolumeSnapshotContent (Retain)
// for handle and a VolumeSnapshot bound to it, waits until the snapshot is
// ready, and returns the content as it is then. The content is
// cluster-scoped, so it is deleted when the test ends.
func (c *Cluster) importSnapshot(t *testing.T, ns, name, handle string) *unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	contentName := ns + "-" + name
	content := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1",
		"kind":       "VolumeSnapshotContent",
		"metadata":   map[string]any{"name": contentName},
		"spec": map[string]any{
			"driver":                  CSIDriver,
			"deletionPolicy":          "Retain",
			"volumeSnapshotClassName": SnapshotClass,
			"source":                  map[string]any{"snapshotHandle": handle},
			"volumeSnapshotRef":       map[string]any{"name": name, "namespace": ns},
		},
	}}
	if _, err := c.Dynamic.Resource(volumeSnapshotContents).Create(ctx, content, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VolumeSnapshotContent %s: %v", contentName, err)
	}
	t.Cleanup(func() {
		_ = c.Dynamic.Resource(volumeSnapshots).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = c.Dynamic.Resource(volumeSnapshotContents).Delete(context.Background(), contentName, metav1.DeleteOptions{})
	})
	snap := volumeSnapshot(name, map[string]any{"volumeSnapshotContentName": contentName})
	if _, err := c.Dynamic.Resource(volumeSnapshots).Namespace(ns).Create(ctx, snap, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VolumeSnapshot %s: %v", name, err)
	}
	c.waitSnapshotReady(t, ns, name)
	got, err := c.Dynamic.Resource(volumeSnapshotContents).Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
