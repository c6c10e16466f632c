// Package contentowner hands pre-provisioned VolumeSnapshotContents to the
// node that holds their snapshot.
//
// berth-csi runs the csi-snapshotter sidecar on every node with
// --node-deployment: each sidecar only watches the contents labelled
// snapshot.storage.kubernetes.io/managed-by=<its node>. The snapshot-controller
// sets that label on the contents it creates for a VolumeSnapshot of a
// claim, but a content that an administrator writes by hand (a
// pre-provisioned snapshot: spec.source.snapshotHandle) carries no label,
// so no sidecar would ever look at it and its VolumeSnapshot would never
// become ready. A berth snapshot ID names its node (snap-<hex>.<node>), so
// the berth-csi of that node can claim the content by adding the label;
// its own sidecar then checks the snapshot (ListSnapshots) and the content
// goes on like any other, deletion included.
//
// Contents of other drivers, contents already labelled, and handles that
// are not berth snapshot IDs of this node are left alone. At most one node
// matches a handle, so two nodes never race for one content.
package contentowner

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/berthdev/berth/csi/store"
)

// ManagedByLabel is the label external-snapshotter's node-deployment mode
// selects contents by.
const ManagedByLabel = "snapshot.storage.kubernetes.io/managed-by"

// Contents is the VolumeSnapshotContent resource.
var Contents = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotcontents"}

// Owner labels this node's unlabelled pre-provisioned contents.
type Owner struct {
	Client dynamic.Interface
	Driver string // CSI driver name; contents of other drivers are ignored
	Node   string // this node's ID, as in the snapshot IDs it creates
	Log    *slog.Logger
	// Resync relists every content this often, so that a patch lost to a
	// crash between list and patch is retried (0: 10 minutes).
	Resync time.Duration

	claimed prometheus.Counter
	failed  prometheus.Counter
}

// Register adds the owner's counters to reg; call it before Run.
func (o *Owner) Register(reg prometheus.Registerer) {
	o.claimed = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_csi_snapshot_contents_claimed_total",
		Help: "Pre-provisioned VolumeSnapshotContents this node labelled as its own."})
	o.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_csi_snapshot_content_claim_errors_total",
		Help: "Failed attempts to label a pre-provisioned VolumeSnapshotContent (retried with backoff)."})
	reg.MustRegister(o.claimed, o.failed)
}

// Decide says whether this node should claim the content, and why not
// when it should not. It only reads the object. A content being deleted is
// claimed too: its deletion (DeleteSnapshot for deletionPolicy Delete, the
// finalizers either way) is the sidecar's job as well.
func (o *Owner) Decide(c *unstructured.Unstructured) (bool, string) {
	if _, ok := c.GetLabels()[ManagedByLabel]; ok {
		return false, "already managed"
	}
	if d, _, _ := unstructured.NestedString(c.Object, "spec", "driver"); d != o.Driver {
		return false, "driver " + d
	}
	handle, _, _ := unstructured.NestedString(c.Object, "spec", "source", "snapshotHandle")
	if handle == "" {
		// Dynamic contents (source.volumeHandle) are labelled by the
		// snapshot-controller when it creates them.
		return false, "no spec.source.snapshotHandle"
	}
	id, err := store.ParseID(store.KindSnapshot, handle)
	if err != nil {
		return false, "spec.source.snapshotHandle: " + err.Error()
	}
	if id.Node != o.Node {
		return false, "snapshot lives on node " + id.Node
	}
	return true, ""
}

// Run watches unlabelled contents until ctx ends.
func (o *Owner) Run(ctx context.Context) error {
	if o.Resync == 0 {
		o.Resync = 10 * time.Minute
	}
	// Only unlabelled contents are of interest; the API server filters,
	// so a cluster full of dynamic snapshots costs this watch nothing.
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(o.Client, o.Resync, metav1.NamespaceAll,
		func(lo *metav1.ListOptions) { lo.LabelSelector = "!" + ManagedByLabel })
	inf := f.ForResource(Contents)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer q.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			q.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	o.Log.Info("claiming pre-provisioned snapshot contents of this node", "driver", o.Driver, "node", o.Node)
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for {
		key, quit := q.Get()
		if quit {
			return nil
		}
		if err := o.sync(ctx, inf.Lister().Get, key); err != nil {
			o.count(o.failed)
			o.Log.Warn("claim snapshot content", "content", key, "err", err)
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

func (o *Owner) sync(ctx context.Context, get func(string) (runtime.Object, error), name string) error {
	obj, err := get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	c, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected object %T", obj)
	}
	claim, why := o.Decide(c)
	if !claim {
		o.Log.Debug("snapshot content not ours", "content", name, "reason", why)
		return nil
	}
	// A merge patch with the resourceVersion fails with Conflict if the
	// content changed meanwhile (say, someone else labelled it); the
	// retry then decides again on the fresh object.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": c.GetResourceVersion(),
		"labels":          map[string]string{ManagedByLabel: o.Node},
	}})
	if _, err := o.Client.Resource(Contents).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	o.count(o.claimed)
	handle, _, _ := unstructured.NestedString(c.Object, "spec", "source", "snapshotHandle")
	o.Log.Info("claimed pre-provisioned snapshot content", "content", name, "snapshot", handle)
	return nil
}

func (o *Owner) count(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}
