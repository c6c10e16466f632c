package contentowner

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

const (
	driverName = "berth.csi.dev"
	here       = "node-a"
	snapHere   = "snap-0123456789abcdef0123456789abcdef.node-a"
	snapThere  = "snap-0123456789abcdef0123456789abcdef.node-b"
)

// content builds a VolumeSnapshotContent; handle "" makes a dynamic one
// (source.volumeHandle).
func content(name, driver, handle string, labels map[string]string) *unstructured.Unstructured {
	source := map[string]any{"snapshotHandle": handle}
	if handle == "" {
		source = map[string]any{"volumeHandle": "vol-0123456789abcdef0123456789abcdef.node-a"}
	}
	c := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1",
		"kind":       "VolumeSnapshotContent",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"driver":         driver,
			"deletionPolicy": "Delete",
			"source":         source,
			"volumeSnapshotRef": map[string]any{
				"name": "snap", "namespace": "default",
			},
		},
	}}
	if labels != nil {
		c.SetLabels(labels)
	}
	return c
}

func newOwner(objs ...runtime.Object) *Owner {
	s := runtime.NewScheme()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s,
		map[schema.GroupVersionResource]string{Contents: "VolumeSnapshotContentList"}, objs...)
	return &Owner{Client: client, Driver: driverName, Node: here, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestDecide(t *testing.T) {
	o := newOwner()
	for _, tc := range []struct {
		name  string
		c     *unstructured.Unstructured
		claim bool
	}{
		{"pre-provisioned here", content("c", driverName, snapHere, nil), true},
		{"pre-provisioned on another node", content("c", driverName, snapThere, nil), false},
		{"already labelled", content("c", driverName, snapHere, map[string]string{ManagedByLabel: "node-b"}), false},
		{"other driver", content("c", "hostpath.csi.k8s.io", snapHere, nil), false},
		{"dynamic content", content("c", driverName, "", nil), false},
		{"volume ID as snapshot handle", content("c", driverName, "vol-0123456789abcdef0123456789abcdef.node-a", nil), false},
		{"garbage handle", content("c", driverName, "../../etc", nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := o.Decide(tc.c)
			if got != tc.claim {
				t.Fatalf("Decide = %v (%s), want %v", got, why, tc.claim)
			}
			if !got && why == "" {
				t.Error("a refusal must say why")
			}
		})
	}
}

// TestRunLabelsOnlyOwnContents runs the watch loop against a fake API
// with a mix of contents and checks which ones end up labelled.
func TestRunLabelsOnlyOwnContents(t *testing.T) {
	o := newOwner(
		content("mine", driverName, snapHere, nil),
		content("theirs", driverName, snapThere, nil),
		content("foreign", "other.csi.dev", snapHere, nil),
	)
	reg := prometheus.NewRegistry()
	o.Register(reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	label := func(name string) string {
		c, err := o.Client.Resource(Contents).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		return c.GetLabels()[ManagedByLabel]
	}
	// A content created after the start arrives through the watch.
	if _, err := o.Client.Resource(Contents).Create(ctx, content("later", driverName, snapHere, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for label("mine") == "" || label("later") == "" {
		if time.Now().After(deadline) {
			t.Fatalf("contents of this node not labelled: mine=%q later=%q", label("mine"), label("later"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"mine", "later"} {
		if got := label(name); got != here {
			t.Errorf("%s labelled %q, want %q", name, got, here)
		}
	}
	for _, name := range []string{"theirs", "foreign"} {
		if got := label(name); got != "" {
			t.Errorf("%s labelled %q, want no label", name, got)
		}
	}
	if got := testutil.ToFloat64(o.claimed); got != 2 {
		t.Errorf("claimed counter = %v, want 2", got)
	}
}
