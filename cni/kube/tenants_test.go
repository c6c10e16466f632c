package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/berthdev/berth/cni/tenant"
)

var configMapsGVR = corev1.SchemeGroupVersion.WithResource("configmaps")

// apiServer is a fake clientset that, like the real API server and unlike
// client-go's object tracker, gives every write a new resourceVersion and
// refuses an Update whose resourceVersion is not the stored one (409
// Conflict). beforeUpdate, when set, runs first on every Update of the
// tenant table: it lets a test slip another node's write in between the
// allocator's Get and its Update, the race the optimistic concurrency is
// there for.
type apiServer struct {
	*fake.Clientset
	mu           sync.Mutex
	rv           int
	updates      int         // Updates that reached the store
	conflicts    int         // Updates refused
	beforeUpdate func(n int) // n: the how-manyth Update attempt, from 1
	attempts     int
}

func newAPIServer(objs ...runtime.Object) *apiServer {
	s := &apiServer{Clientset: fake.NewClientset(objs...), rv: 100}
	s.PrependReactor("create", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cm := a.(k8stesting.CreateAction).GetObject().(*corev1.ConfigMap)
		s.mu.Lock()
		s.rv++
		cm.ResourceVersion = strconv.Itoa(s.rv)
		s.mu.Unlock()
		return false, nil, nil // on to the tracker, which stores cm
	})
	s.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cm := a.(k8stesting.UpdateAction).GetObject().(*corev1.ConfigMap)
		s.mu.Lock()
		s.attempts++
		n, hook := s.attempts, s.beforeUpdate
		s.mu.Unlock()
		if hook != nil {
			hook(n)
		}
		cur, err := s.Tracker().Get(configMapsGVR, cm.Namespace, cm.Name)
		if err != nil {
			return false, nil, nil // the tracker answers NotFound
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if cur.(*corev1.ConfigMap).ResourceVersion != cm.ResourceVersion {
			s.conflicts++
			return true, nil, apierrors.NewConflict(configMapsGVR.GroupResource(), cm.Name, errors.New("the object has been modified"))
		}
		s.rv++
		s.updates++
		cm.ResourceVersion = strconv.Itoa(s.rv)
		return false, nil, nil
	})
	return s
}

// otherNode writes to the stored table directly, as another berth-netd's
// successful Update would: the entry is added and the version moves on.
func (s *apiServer) otherNode(t *testing.T, tenantName string, idx uint32) {
	t.Helper()
	obj, err := s.Tracker().Get(configMapsGVR, DefaultTenantsNamespace, DefaultTenantsName)
	if err != nil {
		t.Fatalf("other node: %v", err)
	}
	cm := obj.(*corev1.ConfigMap).DeepCopy()
	cm.Data[tenantName] = strconv.Itoa(int(idx))
	cm.Annotations[AnnotationNextIndex] = strconv.Itoa(int(idx) + 1)
	s.mu.Lock()
	s.rv++
	cm.ResourceVersion = strconv.Itoa(s.rv)
	s.mu.Unlock()
	if err := s.Tracker().Update(configMapsGVR, cm, cm.Namespace); err != nil {
		t.Fatalf("other node: %v", err)
	}
}

func table(next int, data map[string]string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultTenantsName, Namespace: DefaultTenantsNamespace, ResourceVersion: "7"},
		Data:       data,
	}
	if next > 0 {
		cm.Annotations = map[string]string{AnnotationNextIndex: strconv.Itoa(next)}
	}
	return cm
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseAssignment(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cm      *corev1.ConfigMap
		want    map[string]uint32
		next    uint32
		skipped []string
	}{
		{name: "no table yet", want: map[string]uint32{"default": 0}, next: 1},
		{name: "plain", cm: table(3, map[string]string{"default": "0", "blue": "1", "green": "2"}),
			want: map[string]uint32{"default": 0, "blue": 1, "green": 2}, next: 3},
		{name: "high-water mark above the entries keeps a removed index reserved", cm: table(9, map[string]string{"default": "0", "blue": "1"}),
			want: map[string]uint32{"default": 0, "blue": 1}, next: 9},
		{name: "entries above a stale mark win", cm: table(2, map[string]string{"default": "0", "blue": "5"}),
			want: map[string]uint32{"default": 0, "blue": 5}, next: 6},
		{name: "default is always there", cm: table(0, map[string]string{"blue": "1"}),
			want: map[string]uint32{"default": 0, "blue": 1}, next: 2},
		{name: "bad entries are skipped but their index stays reserved",
			cm: table(0, map[string]string{"default": "0", "Bad_Upper": "4", "blue": "x", "green": "-1", "huge": "4096", "zero": "0", "a": "3", "b": "3"}),
			// b loses index 3 to a, which sorts first; Bad_Upper's 4
			// is never handed out again.
			want: map[string]uint32{"default": 0, "a": 3}, next: 5,
			skipped: []string{"Bad_Upper", "b", "blue", "green", "huge", "zero"}},
		{name: "default on another index", cm: table(0, map[string]string{"default": "2", "blue": "1"}),
			want: map[string]uint32{"default": 0, "blue": 1}, next: 3, skipped: []string{"default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, skips := ParseAssignment(tc.cm)
			if !reflect.DeepEqual(a.Indexes, tc.want) || a.Next != tc.next {
				t.Errorf("got %v next %d, want %v next %d", a.Indexes, a.Next, tc.want, tc.next)
			}
			var names []string
			for _, s := range skips {
				names = append(names, s.Name)
			}
			if !reflect.DeepEqual(names, tc.skipped) {
				t.Errorf("skipped %v (%+v), want %v", names, skips, tc.skipped)
			}
		})
	}
	bad := table(0, map[string]string{"default": "0"})
	bad.Annotations = map[string]string{AnnotationNextIndex: "many"}
	if _, skips := ParseAssignment(bad); len(skips) != 1 || skips[0].Name != AnnotationNextIndex {
		t.Errorf("an unreadable %s is not reported: %+v", AnnotationNextIndex, skips)
	}
}

func TestTenantAllocatorEnsure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing *corev1.ConfigMap // nil: the table does not exist yet
		want     []string
		seed     map[string]uint32
		// race runs before the given Update attempt (1-based) reaches
		// the store.
		race     func(t *testing.T, s *apiServer, attempt int)
		backoff  wait.Backoff
		expect   map[string]uint32
		next     string
		updates  int // Updates the store accepted
		refused  int // Updates refused with Conflict
		creates  int
		errMatch string
	}{
		{
			name:    "first tenant creates the table",
			want:    []string{"green", "blue", tenant.Default},
			expect:  map[string]uint32{"default": 0, "blue": 1, "green": 2},
			next:    "3",
			creates: 1,
		},
		{
			name:    "the first node's registry seeds a new table",
			want:    []string{"green", "blue", "red"},
			seed:    map[string]uint32{"default": 0, "green": 1, "blue": 2, "Bad": 3},
			expect:  map[string]uint32{"default": 0, "green": 1, "blue": 2, "red": 4},
			next:    "5",
			creates: 1,
		},
		{
			name:     "a new tenant is appended after the high-water mark",
			existing: table(5, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"blue", "green"},
			expect:   map[string]uint32{"default": 0, "blue": 1, "green": 5},
			next:     "6",
			updates:  1,
		},
		{
			name:     "nothing new: no write",
			existing: table(3, map[string]string{"default": "0", "blue": "1", "green": "2"}),
			want:     []string{"green", tenant.Default},
			expect:   map[string]uint32{"default": 0, "blue": 1, "green": 2},
			next:     "3",
		},
		{
			name:     "the seed is ignored once the table exists",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"green"},
			seed:     map[string]uint32{"default": 0, "green": 1},
			expect:   map[string]uint32{"default": 0, "blue": 1, "green": 2},
			next:     "3",
			updates:  1,
		},
		{
			name:     "invalid names are never written",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"../etc", "blue"},
			expect:   map[string]uint32{"default": 0, "blue": 1},
			next:     "2",
		},
		{
			// Another node appends "red" between our Get and Update:
			// ours is refused, and the retry must not reuse red's index.
			name:     "conflict: another node wrote first",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"blue", "green"},
			race: func(t *testing.T, s *apiServer, attempt int) {
				if attempt == 1 {
					s.otherNode(t, "red", 2)
				}
			},
			expect:  map[string]uint32{"default": 0, "blue": 1, "red": 2, "green": 3},
			next:    "4",
			updates: 1,
			refused: 1,
		},
		{
			// The other node assigned the very tenant we wanted: after
			// the conflict there is nothing left to write.
			name:     "conflict: the other node assigned the same tenant",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"green"},
			race: func(t *testing.T, s *apiServer, attempt int) {
				if attempt == 1 {
					s.otherNode(t, "green", 2)
				}
			},
			expect:  map[string]uint32{"default": 0, "blue": 1, "green": 2},
			next:    "3",
			refused: 1,
		},
		{
			name:     "conflicts three times in a row, then wins",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"green"},
			race: func(t *testing.T, s *apiServer, attempt int) {
				if attempt <= 3 {
					s.otherNode(t, fmt.Sprintf("other-%d", attempt), uint32(attempt+1))
				}
			},
			expect:  map[string]uint32{"default": 0, "blue": 1, "other-1": 2, "other-2": 3, "other-3": 4, "green": 5},
			next:    "6",
			updates: 1,
			refused: 3,
		},
		{
			name:     "gives up after the backoff's attempts",
			existing: table(2, map[string]string{"default": "0", "blue": "1"}),
			want:     []string{"green"},
			race: func(t *testing.T, s *apiServer, attempt int) {
				s.otherNode(t, fmt.Sprintf("other-%d", attempt), uint32(attempt+1))
			},
			backoff:  wait.Backoff{Steps: 3, Duration: time.Millisecond},
			refused:  3,
			errMatch: "after 3 attempts",
		},
		{
			name:     "index space exhausted",
			existing: table(tenant.MaxTenants, map[string]string{"default": "0"}),
			want:     []string{"green"},
			errMatch: "all 4096 tenant indexes",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.existing != nil {
				objs = append(objs, tc.existing)
			}
			api := newAPIServer(objs...)
			if tc.race != nil {
				api.beforeUpdate = func(n int) { tc.race(t, api, n) }
			}
			a := &TenantAllocator{Client: api, Logger: discard(), Backoff: tc.backoff}
			got, err := a.Ensure(context.Background(), tc.want, tc.seed)
			if tc.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMatch) {
					t.Fatalf("err = %v, want mention of %q", err, tc.errMatch)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.errMatch == "" && !reflect.DeepEqual(got, tc.expect) {
				t.Errorf("Ensure = %v, want %v", got, tc.expect)
			}
			creates := 0
			for _, act := range api.Actions() {
				if act.GetVerb() == "create" {
					creates++
				}
			}
			if api.updates != tc.updates || api.conflicts != tc.refused || creates != tc.creates {
				t.Errorf("writes: %d updates, %d refused, %d creates; want %d, %d, %d", api.updates, api.conflicts, creates, tc.updates, tc.refused, tc.creates)
			}
			if tc.errMatch != "" {
				return
			}
			// What is stored is what Ensure returned, with the mark.
			cm, err := api.CoreV1().ConfigMaps(DefaultTenantsNamespace).Get(context.Background(), DefaultTenantsName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			stored, skips := ParseAssignment(cm)
			if tc.seed == nil && len(skips) > 0 {
				t.Errorf("stored table has unusable entries: %+v", skips)
			}
			if !reflect.DeepEqual(stored.Indexes, tc.expect) || cm.Annotations[AnnotationNextIndex] != tc.next {
				t.Errorf("stored %v (%s=%s), want %v (%s)", stored.Indexes, AnnotationNextIndex, cm.Annotations[AnnotationNextIndex], tc.expect, tc.next)
			}
		})
	}
}

// TestTenantAllocatorConcurrentNodes runs one allocator per "node" at once
// against one API, each wanting an overlapping set of tenants in its own
// order. However the writes interleave, every tenant ends with one index,
// no index is given twice, and every node saw the same table.
func TestTenantAllocatorConcurrentNodes(t *testing.T) {
	api := newAPIServer()
	tenants := []string{"t1", "t2", "t3", "t4", "t5", "t6"}
	const nodes = 6
	results := make([]map[string]uint32, nodes)
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			// One tenant more per call, as namespaces appear one by one,
			// so the nodes' writes interleave.
			order := slicesRotate(tenants, n)
			a := &TenantAllocator{Client: api, Logger: discard(), Backoff: wait.Backoff{Steps: 50, Duration: time.Millisecond, Jitter: 1}}
			for k := 1; k <= 4; k++ {
				got, err := a.Ensure(context.Background(), order[:k], nil)
				if err != nil {
					t.Errorf("node %d: %v", n, err)
					return
				}
				results[n] = got
			}
		}(n)
	}
	wg.Wait()
	cm, err := api.CoreV1().ConfigMaps(DefaultTenantsNamespace).Get(context.Background(), DefaultTenantsName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	final, skips := ParseAssignment(cm)
	if len(skips) > 0 || len(final.Indexes) != len(tenants)+1 {
		t.Fatalf("final table %v, skips %+v", final.Indexes, skips)
	}
	seen := map[uint32]string{}
	for n, i := range final.Indexes {
		if o, dup := seen[i]; dup {
			t.Errorf("index %d given to %s and %s", i, o, n)
		}
		seen[i] = n
	}
	for n, r := range results {
		for tn, i := range r {
			if final.Indexes[tn] != i {
				t.Errorf("node %d saw %s=%d, the table says %d", n, tn, i, final.Indexes[tn])
			}
		}
	}
	t.Logf("%d updates stored, %d refused with Conflict", api.updates, api.conflicts)
}

func slicesRotate(s []string, n int) []string {
	n %= len(s)
	return append(append([]string{}, s[n:]...), s[:n]...)
}

// TestSyncerClusterTenants runs the Syncer in cluster mode against a fake
// API: labelled namespaces get indexes in the ConfigMap, the table is
// mirrored into the node's registry (a conflicting local index loses), a
// write by another node is mirrored too, and a restarted berth-netd with an
// empty registry gets the same indexes back from the ConfigMap.
func TestSyncerClusterTenants(t *testing.T) {
	ns := func(name, tnt string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if tnt != "" {
			n.Labels = map[string]string{LabelTenant: tnt}
		}
		return n
	}
	api := newAPIServer(ns("kube-system", ""), ns("shop", "green"))
	dir := t.TempDir()
	registry := filepath.Join(dir, "tenants.json")
	// This node met blue first, under the old per-node scheme.
	if _, err := (tenant.Registry{Path: registry}).Index("blue"); err != nil {
		t.Fatal(err)
	}
	start := func(reg string) (*Syncer, context.CancelFunc) {
		t.Helper()
		s := &Syncer{Client: api, PeersFile: filepath.Join(dir, "peers.json"), MappingFile: filepath.Join(dir, "ns.json"),
			Logger: discard(), Tenants: &TenantAllocator{Client: api, Logger: discard()}, TenantRegistry: reg}
		ctx, cancel := context.WithCancel(context.Background())
		if err := s.Run(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		return s, cancel
	}
	regNow := func(path string) map[string]uint32 {
		m, _ := tenant.Registry{Path: path}.List()
		return m
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_, stop := start(registry)
	// The table did not exist: it was created from this node's registry
	// (blue=1) plus green from the namespace label.
	want := map[string]uint32{"default": 0, "blue": 1, "green": 2}
	waitFor("green in the registry", func() bool { return reflect.DeepEqual(regNow(registry), want) })

	ctx := context.Background()
	api.CoreV1().Namespaces().Create(ctx, ns("blog", "purple"), metav1.CreateOptions{})
	want["purple"] = 3
	waitFor("purple in the registry", func() bool { return reflect.DeepEqual(regNow(registry), want) })

	// Another node assigns red; the informer mirrors it here without
	// any namespace of ours naming it.
	api.otherNode(t, "red", 4)
	want["red"] = 4
	waitFor("red mirrored from the table", func() bool { return reflect.DeepEqual(regNow(registry), want) })
	stop()

	// A second node whose registry disagrees (it met green first, and
	// a tenant the cluster never heard of sits on purple's index): the
	// cluster's table wins, and the node's own tenant is dropped.
	other := filepath.Join(dir, "node2", "tenants.json")
	os.MkdirAll(filepath.Dir(other), 0o755)
	raw, _ := json.Marshal(map[string]any{"tenants": map[string]uint32{"default": 0, "green": 1, "local-only": 3}, "next": 4})
	os.WriteFile(other, raw, 0o600)
	_, stop2 := start(other)
	waitFor("node 2 to follow the table", func() bool { return reflect.DeepEqual(regNow(other), want) })
	stop2()

	// A restarted berth-netd on a node whose registry was lost gets the
	// same indexes from the ConfigMap.
	fresh := filepath.Join(dir, "node3", "tenants.json")
	_, stop3 := start(fresh)
	defer stop3()
	waitFor("the restarted node's registry", func() bool { return reflect.DeepEqual(regNow(fresh), want) })
}
