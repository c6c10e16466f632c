package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/berthdev/berth/cni/tenant"
)

// pod builds a pod for the remote tests; opts tweak it.
func pod(ns, name, nodeName string, ips []string, opts ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec:   corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withAnnotation(k, v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func withLabel(k, v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Labels = map[string]string{k: v} }
}

func createdAt(sec int64) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Unix(sec, 0)) }
}

func deleting(p *corev1.Pod) { t := metav1.NewTime(time.Unix(5000, 0)); p.DeletionTimestamp = &t }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestRemoteEndpoints covers the mapping from the cluster's pods to
// berth_remote on node "w1": identities from this node's registry (index
// + 1), the pod's own tenant label or annotation before its namespace, 0
// for what is not known here, no entry for this node's pods, host-network
// or finished pods, the flat subnets as the default tenant's, and which of
// two pods claiming one address wins.
func TestRemoteEndpoints(t *testing.T) {
	ns := map[string]string{"tnh-a": "alpha", "tnh-b": "beta", "kube-system": "default", "tnh-c": "gamma"}
	idx := map[string]uint32{"default": 0, "alpha": 3, "beta": 4} // gamma: no index here yet
	flat := []netip.Prefix{pfx("198.19.0.0/16")}
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	phase := func(ph corev1.PodPhase) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Status.Phase = ph } }
	tests := []struct {
		name      string
		pods      []*corev1.Pod
		nsTenants map[string]string // nil: ns (the usual mapping)
		noMapping bool              // no mapping file: namespaces are tenants of their own name
		flat      []netip.Prefix
		want      map[string]uint32
		skips     []string
	}{
		{name: "nothing: only the flat subnet as default", flat: flat,
			want: map[string]uint32{"198.19.0.0/16": DefaultTenantID}},
		{name: "macvlan and vxlan pods of other nodes get their namespace's identity",
			pods: []*corev1.Pod{
				pod("tnh-a", "m", "w2", []string{"198.19.1.5"}, withAnnotation(AnnotationNetwork, "berth-macvlan")),
				pod("tnh-b", "v", "w2", []string{"10.244.1.9"}),
				pod("kube-system", "dns", "cp", []string{"10.244.0.3"}),
			},
			want: map[string]uint32{"198.19.1.5/32": 4, "10.244.1.9/32": 5, "10.244.0.3/32": 1}},
		{name: "this node's, host-network, unscheduled and finished pods are left out",
			pods: []*corev1.Pod{
				pod("tnh-a", "mine", "w1", []string{"198.19.2.5"}),
				pod("tnh-a", "host", "w2", []string{"172.18.0.2"}, hostNet),
				pod("tnh-a", "pending", "", nil),
				pod("tnh-a", "done", "w2", []string{"10.244.1.20"}, phase(corev1.PodSucceeded)),
				pod("tnh-a", "failed", "w2", []string{"10.244.1.21"}, phase(corev1.PodFailed)),
				pod("tnh-a", "starting", "w2", nil, phase(corev1.PodPending)),
			},
			want: map[string]uint32{}},
		{name: "dual-stack pod: both addresses",
			pods: []*corev1.Pod{pod("tnh-b", "ds", "w2", []string{"10.244.1.9", "fd00::9"})},
			want: map[string]uint32{"10.244.1.9/32": 5, "fd00::9/128": 5}},
		{name: "the pod's label or annotation names its tenant, as berth-cni took it",
			pods: []*corev1.Pod{
				pod("tnh-a", "ann", "w2", []string{"10.244.1.2"}, withAnnotation(tenant.AnnotationKey, "beta")),
				pod("tnh-a", "lbl", "w2", []string{"10.244.1.3"}, withLabel(tenant.AnnotationKey, "beta"), withAnnotation(tenant.AnnotationKey, "default")),
			},
			want: map[string]uint32{"10.244.1.2/32": 5, "10.244.1.3/32": 5}},
		{name: "unknown here: unmapped namespace, tenant without index, invalid name -> 0",
			pods: []*corev1.Pod{
				pod("tnh-new", "a", "w2", []string{"10.244.1.4"}),
				pod("tnh-c", "b", "w2", []string{"10.244.1.5"}),
				pod("tnh-a", "c", "w2", []string{"10.244.1.6"}, withAnnotation(tenant.AnnotationKey, "Not Valid")),
			},
			want:  map[string]uint32{"10.244.1.4/32": UnresolvedTenant, "10.244.1.5/32": UnresolvedTenant, "10.244.1.6/32": UnresolvedTenant},
			skips: []string{"tnh-a/c", "tnh-c/b", "tnh-new/a"}},
		{name: "no mapping file: the namespace is the tenant, as the plugin falls back to", noMapping: true,
			pods: []*corev1.Pod{pod("alpha", "a", "w2", []string{"10.244.1.4"}), pod("tnh-b", "b", "w2", []string{"10.244.1.5"})},
			want: map[string]uint32{"10.244.1.4/32": 4, "10.244.1.5/32": UnresolvedTenant}, skips: []string{"tnh-b/b"}},
		{name: "a reused address: the pod not being deleted wins",
			pods: []*corev1.Pod{
				pod("tnh-b", "new", "w2", []string{"198.19.1.7"}, createdAt(100)),
				pod("tnh-a", "old", "w2", []string{"198.19.1.7"}, createdAt(200), deleting),
			},
			want: map[string]uint32{"198.19.1.7/32": 5}},
		{name: "a reused address: then the newer pod",
			pods: []*corev1.Pod{
				pod("tnh-b", "newer", "w2", []string{"198.19.1.7"}, createdAt(300)),
				pod("tnh-a", "older", "w3", []string{"198.19.1.7"}, createdAt(200)),
			},
			want: map[string]uint32{"198.19.1.7/32": 5}},
		{name: "a pod's own entry sits inside the flat subnet's", flat: flat,
			pods: []*corev1.Pod{pod("tnh-a", "m", "w2", []string{"198.19.1.5"})},
			want: map[string]uint32{"198.19.0.0/16": DefaultTenantID, "198.19.1.5/32": 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := RemoteInput{Self: "w1", Pods: tc.pods, NamespaceTenants: ns, Indexes: idx, FlatSubnets: tc.flat}
			if tc.nsTenants != nil {
				in.NamespaceTenants = tc.nsTenants
			}
			if tc.noMapping {
				in.NamespaceTenants = nil
			}
			got, skips := RemoteEndpoints(in)
			want := map[netip.Prefix]uint32{}
			for k, v := range tc.want {
				want[pfx(k)] = v
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("RemoteEndpoints = %v\nwant %v", got, want)
			}
			var names []string
			for _, s := range skips {
				names = append(names, s.Name)
			}
			if !reflect.DeepEqual(names, tc.skips) {
				t.Errorf("skips = %v, want %v", skips, tc.skips)
			}
		})
	}
}

// TestSlimPod checks that the informer keeps only what RemoteEndpoints
// reads, and that what it reads survives.
func TestSlimPod(t *testing.T) {
	full := pod("tnh-a", "p", "w2", []string{"198.19.1.5"}, withAnnotation(AnnotationNetwork, "berth-macvlan"),
		withAnnotation("kubectl.kubernetes.io/last-applied-configuration", strings.Repeat("x", 4096)),
		withAnnotation(tenant.AnnotationKey, "alpha"))
	full.Labels = map[string]string{"app": "x", tenant.AnnotationKey: "alpha"}
	full.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}
	full.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	out, err := SlimPod(full)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*corev1.Pod)
	if len(slim.Spec.Containers) != 0 || len(slim.Status.Conditions) != 0 || len(slim.ManagedFields) != 0 {
		t.Errorf("slim pod keeps spec/status/managed fields: %+v", slim)
	}
	if want := map[string]string{AnnotationNetwork: "berth-macvlan", tenant.AnnotationKey: "alpha"}; !reflect.DeepEqual(slim.Annotations, want) {
		t.Errorf("annotations = %v, want %v", slim.Annotations, want)
	}
	if want := map[string]string{tenant.AnnotationKey: "alpha"}; !reflect.DeepEqual(slim.Labels, want) {
		t.Errorf("labels = %v, want %v", slim.Labels, want)
	}
	in := RemoteInput{Self: "w1", NamespaceTenants: map[string]string{"tnh-a": "alpha"}, Indexes: map[string]uint32{"alpha": 3}}
	in.Pods = []*corev1.Pod{full}
	a, _ := RemoteEndpoints(in)
	in.Pods = []*corev1.Pod{slim}
	b, _ := RemoteEndpoints(in)
	if !reflect.DeepEqual(a, b) || len(a) != 1 {
		t.Errorf("RemoteEndpoints differs on the slim pod: %v vs %v", a, b)
	}
	// An old pod with only status.podIP still has its address.
	legacy := pod("tnh-a", "old", "w2", nil)
	legacy.Status.PodIP = "10.244.1.2"
	if out, _ := SlimPod(legacy); len(out.(*corev1.Pod).Status.PodIPs) != 1 {
		t.Errorf("status.podIP lost: %+v", out)
	}
	// A tombstone passes unchanged.
	tomb := tombstone{}
	if out, _ := SlimPod(tomb); out != any(tomb) {
		t.Error("a non-pod object was changed")
	}
}

type tombstone struct{}

// TestPodFieldSelector checks that the selector parses and keeps out this
// node's, host-network and finished pods.
func TestPodFieldSelector(t *testing.T) {
	sel, err := fields.ParseSelector(PodFieldSelector("w1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		node, hostNet, phase string
		want                 bool
	}{
		{"w2", "false", "Running", true},
		{"w2", "false", "Pending", true},
		{"w1", "false", "Running", false},
		{"w2", "true", "Running", false},
		{"w2", "false", "Succeeded", false},
		{"w2", "false", "Failed", false},
	} {
		set := fields.Set{"spec.nodeName": tc.node, "spec.hostNetwork": tc.hostNet, "status.phase": tc.phase}
		if got := sel.Matches(set); got != tc.want {
			t.Errorf("%v: matches=%v, want %v", set, got, tc.want)
		}
	}
}

// TestFlatSubnets reads the flat networks of conflists, the shipped ones
// included: the macvlan network is flat, the VXLAN one is not.
func TestFlatSubnets(t *testing.T) {
	tmpls := shippedTemplates(t)
	render := func(k string) string {
		b, err := RenderConf(tmpls[k], ConfData{PodCIDR: "10.244.1.0/24", NodeName: "w1"})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, conf string
		want       []netip.Prefix
		err        bool
	}{
		{name: "shipped vxlan", conf: render("10-berth.conflist.tmpl")},
		{name: "shipped macvlan", conf: render("20-berth-macvlan.conflist.tmpl"), want: []netip.Prefix{pfx("198.19.0.0/16")}},
		{name: "ipvlan, single network configuration", conf: `{"type":"berth","mode":"ipvlan","ipam":{"subnet":"198.18.7.9/24"}}`, want: []netip.Prefix{pfx("198.18.7.0/24")}},
		{name: "tenancy off", conf: `{"plugins":[{"type":"berth","mode":"macvlan","tenancy":{"enabled":false},"ipam":{"subnet":"198.19.0.0/16"}}]}`},
		{name: "another plugin", conf: `{"plugins":[{"type":"macvlan","mode":"bridge","ipam":{"subnet":"198.19.0.0/16"}}]}`},
		{name: "bad subnet", conf: `{"plugins":[{"type":"berth","mode":"macvlan","ipam":{"subnet":"nope"}}]}`, err: true},
		{name: "not JSON", conf: `{`, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FlatSubnets([]byte(tc.conf))
			if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("FlatSubnets = %v, %v; want %v (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}

// fakeRemote is berth_remote in memory, with a log of the writes.
type fakeRemote struct {
	mu      sync.Mutex
	m       map[netip.Prefix]uint32
	ops     []string
	lists   int
	failSet error
}

func newFakeRemote(init map[netip.Prefix]uint32) *fakeRemote {
	if init == nil {
		init = map[netip.Prefix]uint32{}
	}
	return &fakeRemote{m: init}
}

func (f *fakeRemote) ListRemote() (map[netip.Prefix]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return maps.Clone(f.m), nil
}

func (f *fakeRemote) SetRemote(p netip.Prefix, id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSet != nil {
		return f.failSet
	}
	f.m[p] = id
	f.ops = append(f.ops, fmt.Sprintf("set %s %d", p, id))
	return nil
}

func (f *fakeRemote) DeleteRemote(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, p)
	f.ops = append(f.ops, "del "+p.String())
	return nil
}

func (f *fakeRemote) snapshot() map[netip.Prefix]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.m)
}

func prefixes(m map[string]uint32) map[netip.Prefix]uint32 {
	out := map[netip.Prefix]uint32{}
	for k, v := range m {
		out[pfx(k)] = v
	}
	return out
}

// TestReconcileRemote covers the writes: a full reconcile reads the map and
// removes what a previous berth-netd left behind, an incremental one trusts
// what it was told the map holds, sets go before deletes, and a failure
// reports that the map's state is uncertain.
func TestReconcileRemote(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		inMap, have, want       map[string]uint32 // have nil: full
		ops                     []string
		added, changed, removed int
	}{
		{name: "full: stale entries of a previous run go, kept ones are not rewritten",
			inMap: map[string]uint32{"198.19.1.5/32": 4, "198.19.1.6/32": 5, "198.19.0.0/16": 1},
			want:  map[string]uint32{"198.19.1.5/32": 4, "198.19.1.7/32": 5, "198.19.0.0/16": 1},
			ops:   []string{"set 198.19.1.7/32 5", "del 198.19.1.6/32"}, added: 1, removed: 1},
		{name: "full: a changed tenant is rewritten",
			inMap: map[string]uint32{"10.244.1.9/32": 0}, want: map[string]uint32{"10.244.1.9/32": 5},
			ops: []string{"set 10.244.1.9/32 5"}, changed: 1},
		{name: "incremental: trusts have, touches only the difference",
			inMap: map[string]uint32{"198.19.1.5/32": 4, "198.19.9.9/32": 9}, have: map[string]uint32{"198.19.1.5/32": 4},
			want: map[string]uint32{"198.19.1.8/32": 4},
			ops:  []string{"set 198.19.1.8/32 4", "del 198.19.1.5/32"}, added: 1, removed: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRemote(prefixes(tc.inMap))
			var have map[netip.Prefix]uint32
			if tc.have != nil {
				have = prefixes(tc.have)
			}
			st, now, err := ReconcileRemote(f, prefixes(tc.want), have)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.ops, tc.ops) {
				t.Errorf("ops = %v, want %v", f.ops, tc.ops)
			}
			if st.Added != tc.added || st.Changed != tc.changed || st.Removed != tc.removed || st.Full != (tc.have == nil) || st.Entries != len(tc.want) {
				t.Errorf("stats = %+v", st)
			}
			if !reflect.DeepEqual(now, prefixes(tc.want)) {
				t.Errorf("returned state %v, want %v", now, tc.want)
			}
			if tc.have == nil && !reflect.DeepEqual(f.snapshot(), prefixes(tc.want)) {
				t.Errorf("map = %v, want %v", f.snapshot(), tc.want)
			}
		})
	}
	f := newFakeRemote(nil)
	f.failSet = errors.New("map full")
	if _, now, err := ReconcileRemote(f, prefixes(map[string]uint32{"10.0.0.1/32": 1}), nil); err == nil || now != nil {
		t.Errorf("a failed set: state %v, err %v; want nil state and an error", now, err)
	}
}

// TestSyncerRemote runs the Syncer with remote endpoints against a fake API
// on node w1: berth_remote follows pods coming and going on other nodes,
// namespace relabels and new tenant indexes, holds the macvlan subnet from
// the rendered conflist, and a restarted berth-netd removes what its
// predecessor left for pods that went away while it was down, without ever
// deleting an entry that is still wanted.
func TestSyncerRemote(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "tenants.json")
	writeReg := func(m map[string]uint32) {
		b, _ := json.Marshal(map[string]any{"tenants": m, "next": len(m) + 10})
		if err := os.WriteFile(reg, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeReg(map[string]uint32{"default": 0, "alpha": 3, "beta": 4})
	nsObj := func(name, tnt string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelTenant: tnt}}}
	}
	client := fake.NewClientset(
		node("w1", "10.244.1.0/24", "172.18.0.2", nil), node("w2", "10.244.2.0/24", "172.18.0.3", nil),
		nsObj("tnh-a", "alpha"), nsObj("tnh-b", "beta"),
		pod("tnh-a", "a2", "w2", []string{"198.19.2.5"}, withAnnotation(AnnotationNetwork, "berth-macvlan")),
		pod("tnh-a", "a1", "w1", []string{"198.19.1.5"}), // this node's own
		pod("tnh-b", "b2", "w2", []string{"198.19.2.6"}),
	)
	tmpls := shippedTemplates(t)
	// A previous berth-netd left an entry for a pod that is gone, and b2's
	// entry with a stale tenant.
	f := newFakeRemote(prefixes(map[string]uint32{"198.19.2.99/32": 4, "198.19.2.6/32": 4, "198.19.2.5/32": 4}))
	var statsMu sync.Mutex
	var last RemoteStats
	s := &Syncer{Client: client, PeersFile: filepath.Join(dir, "peers.json"), MappingFile: filepath.Join(dir, "ns.json"),
		Logger: discard(), NodeName: "w1", TenantRegistry: reg,
		Confs: []Conf{
			{Template: tmpls["10-berth.conflist.tmpl"], File: filepath.Join(dir, "net.d", "10-berth.conflist")},
			{Template: tmpls["20-berth-macvlan.conflist.tmpl"], File: filepath.Join(dir, "net.d", "20-berth-macvlan.conflist")},
		},
		RemoteMaps: func() (RemoteMap, error) { return f, nil },
		OnRemote: func(st RemoteStats, err error) {
			statsMu.Lock()
			defer statsMu.Unlock()
			if err == nil {
				last = st
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	waitMap := func(what string, want map[string]uint32) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !reflect.DeepEqual(f.snapshot(), prefixes(want)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: berth_remote = %v, want %v", what, f.snapshot(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	want := map[string]uint32{"198.19.0.0/16": DefaultTenantID, "198.19.2.5/32": 4, "198.19.2.6/32": 5}
	waitMap("first sync", want)
	f.mu.Lock()
	for _, op := range f.ops {
		if op == "del 198.19.2.5/32" || op == "del 198.19.2.6/32" {
			t.Errorf("a wanted entry was deleted on the way: %v", f.ops)
		}
	}
	f.mu.Unlock()
	statsMu.Lock()
	if last.Entries != 3 {
		t.Errorf("last stats %+v, want 3 entries", last)
	}
	statsMu.Unlock()

	api := client.CoreV1()
	// A new pod on another node, in a namespace of a tenant this node has
	// no index for yet: 0 until the registry gains it.
	api.Namespaces().Create(ctx, nsObj("tnh-c", "gamma"), metav1.CreateOptions{})
	api.Pods("tnh-c").Create(ctx, pod("tnh-c", "c2", "w2", []string{"198.19.2.7"}), metav1.CreateOptions{})
	want["198.19.2.7/32"] = UnresolvedTenant
	waitMap("new pod of a tenant without an index", want)
	writeReg(map[string]uint32{"default": 0, "alpha": 3, "beta": 4, "gamma": 5})
	// The registry is not watched here (berth-netd mirrors it and kicks;
	// with registryMode local the minute's full sync catches up): a pod
	// event stands in for the kick.
	api.Pods("tnh-a").Create(ctx, pod("tnh-a", "a3", "w2", []string{"198.19.2.8"}), metav1.CreateOptions{})
	want["198.19.2.7/32"], want["198.19.2.8/32"] = 6, 4
	waitMap("the index arrived", want)

	// A pod goes away.
	api.Pods("tnh-b").Delete(ctx, "b2", metav1.DeleteOptions{})
	delete(want, "198.19.2.6/32")
	waitMap("b2 deleted", want)
	// A pod finishes: its address is released.
	a3, _ := api.Pods("tnh-a").Get(ctx, "a3", metav1.GetOptions{})
	a3.Status.Phase = corev1.PodSucceeded
	api.Pods("tnh-a").UpdateStatus(ctx, a3, metav1.UpdateOptions{})
	delete(want, "198.19.2.8/32")
	waitMap("a3 finished", want)
	// The namespace moves to another tenant.
	api.Namespaces().Update(ctx, nsObj("tnh-a", "beta"), metav1.UpdateOptions{})
	want["198.19.2.5/32"] = 5
	waitMap("tnh-a relabelled", want)
	// Pods of this node never enter the map.
	if _, ok := f.snapshot()[pfx("198.19.1.5/32")]; ok {
		t.Error("this node's pod is in berth_remote")
	}
}
