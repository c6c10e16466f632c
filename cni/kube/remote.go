package kube

// Remote endpoints. A pod's isolation programs know the tenant of an
// address from berth_endpoints, which the CNI plugin fills with this node's
// pods only. On the VXLAN network that is enough, because every tenant has
// its own VNI and the receiving node's VNI guard checks it. A flat network
// (macvlan, ipvlan) has no such wire separation: a pod of another node
// arrives as a bare address, unknown here, and passed. So berth-netd keeps
// a second map, berth_remote, with the tenant of every pod of the other
// nodes, the way Cilium's agent keeps its ipcache of remote identities:
//
//   - every pod of the cluster that is not on this node, not host-network
//     and not finished is watched (a field selector keeps the rest out of
//     the cache, a transform strips what is kept to a few fields);
//   - its tenant is found as berth-cni found it on its own node: the pod's
//     berth.dev/tenant label or annotation, else its namespace's mapping
//     (under tenancy.registryMode "cluster" the plugin refuses a pod that
//     names another tenant than its namespace's, so both agree there);
//   - its BPF identity is the tenant's index in this node's registry plus
//     one, as the local pods' identities are; a pod whose tenant or index
//     is not known here gets 0, which no pod has, so every tenant drops it;
//   - each flat network's subnet (read from the conflists this node
//     renders) is in the map as the default tenant's: an address of that
//     network whose pod is not known yet (a pod that just started, before
//     the watch delivers it) is treated as an unlabelled namespace's pod,
//     reachable by the default tenant and not by isolated ones, rather than
//     passing everywhere;
//   - the map is berth-netd's alone, so it is reconciled whole: on start
//     (after the caches have synced, so a restart never empties it), every
//     minute, and incrementally after every change.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/berthdev/berth/cni/tenant"
)

// AnnotationNetwork is the pod annotation berth-cri reads to choose a
// network other than the default one.
const AnnotationNetwork = "berth.dev/network"

// BPF identities in berth_remote.
const (
	// UnresolvedTenant marks a remote pod whose tenant (or its index) is
	// not known on this node: it matches no pod's identity, so every
	// tenant's pods drop its traffic until it is known.
	UnresolvedTenant uint32 = 0
	// DefaultTenantID is the default tenant's identity (index 0, plus 1).
	DefaultTenantID uint32 = 1
)

// RemoteMap is the part of the pinned BPF maps the remote sync writes
// (*ebpf.Maps in berth-netd).
type RemoteMap interface {
	ListRemote() (map[netip.Prefix]uint32, error)
	SetRemote(p netip.Prefix, tenant uint32) error
	DeleteRemote(p netip.Prefix) error
}

// PodFieldSelector selects the pods whose addresses berth_remote needs on
// node self: running or pending pods of the other nodes with their own
// network namespace. The API server filters, so this node's cache holds
// neither its own pods nor host-network ones (every node's kube-proxy and
// berth-node, for a start).
func PodFieldSelector(self string) string {
	return fields.AndSelectors(
		fields.OneTermEqualSelector("spec.hostNetwork", "false"),
		fields.OneTermNotEqualSelector("spec.nodeName", self),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
	).String()
}

// SlimPod is the pod informer's transform: it keeps only what
// RemoteEndpoints reads, so a cluster's pods cost a few hundred bytes each
// in berth-netd rather than their whole spec and status.
func SlimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: its object was slimmed when stored
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs},
	}
	if len(out.Status.PodIPs) == 0 && p.Status.PodIP != "" {
		out.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	if v, ok := p.Labels[tenant.AnnotationKey]; ok {
		out.Labels = map[string]string{tenant.AnnotationKey: v}
	}
	for _, k := range []string{tenant.AnnotationKey, AnnotationNetwork} {
		if v, ok := p.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}

// RemoteInput is what berth_remote is computed from.
type RemoteInput struct {
	Self string // this node: its pods are in berth_endpoints, not here
	Pods []*corev1.Pod
	// NamespaceTenants is the namespace mapping berth-cni reads (nil: no
	// mapping file, so a namespace is a tenant of its own name, as the
	// plugin falls back to).
	NamespaceTenants map[string]string
	// Indexes is this node's tenant registry: identities in the maps are
	// this node's, whichever node a pod is on.
	Indexes map[string]uint32
	// FlatSubnets are the subnets of the node's flat networks (FlatSubnets).
	FlatSubnets []netip.Prefix
}

// PodTenant is the tenant berth-cni gave p: berth-cri passes the pod's
// berth.dev/tenant label, else its annotation, and the plugin prefers it to
// the namespace (with registryMode "cluster", only when they agree). ok is
// false when the tenant is not known here (its namespace is not mapped) or
// not a valid name (the plugin would have refused the pod).
func PodTenant(p *corev1.Pod, nsTenants map[string]string) (string, bool) {
	for _, v := range []string{p.Labels[tenant.AnnotationKey], p.Annotations[tenant.AnnotationKey]} {
		if v != "" {
			return v, tenant.Valid(v)
		}
	}
	if nsTenants == nil {
		return p.Namespace, tenant.Valid(p.Namespace)
	}
	t, ok := nsTenants[p.Namespace]
	return t, ok
}

// RemoteEndpoints computes berth_remote: every address of a pod of another
// node, as a full-length prefix, with its tenant's identity (or
// UnresolvedTenant), and every flat subnet with the default tenant's. When
// two pods claim one address (one is being deleted as its address is
// handed out again), the one not being deleted wins, then the newer. The
// skips name the pods whose tenant is unresolved.
func RemoteEndpoints(in RemoteInput) (map[netip.Prefix]uint32, []Skip) {
	want := map[netip.Prefix]uint32{}
	for _, p := range in.FlatSubnets {
		want[p.Masked()] = DefaultTenantID
	}
	var skips []Skip
	owner := map[netip.Prefix]*corev1.Pod{}
	for _, p := range in.Pods {
		if p.Spec.HostNetwork || p.Spec.NodeName == "" || p.Spec.NodeName == in.Self ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		id := UnresolvedTenant
		name, ok := PodTenant(p, in.NamespaceTenants)
		if idx, known := in.Indexes[name]; ok && known {
			id = idx + 1
		} else if len(p.Status.PodIPs) > 0 {
			reason := fmt.Sprintf("tenant %q has no index in this node's registry yet", name)
			if !ok {
				reason = fmt.Sprintf("tenant unknown (namespace not mapped yet, or an invalid tenant name %q)", name)
			}
			skips = append(skips, Skip{p.Namespace + "/" + p.Name, reason})
		}
		for _, ip := range p.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			a = a.Unmap()
			k := netip.PrefixFrom(a, a.BitLen())
			if o := owner[k]; o != nil && !newerClaim(p, o) {
				continue
			}
			owner[k] = p
			want[k] = id
		}
	}
	sort.Slice(skips, func(i, j int) bool { return skips[i].Name < skips[j].Name })
	return want, skips
}

// newerClaim reports whether p's claim on an address beats o's.
func newerClaim(p, o *corev1.Pod) bool {
	if (p.DeletionTimestamp == nil) != (o.DeletionTimestamp == nil) {
		return p.DeletionTimestamp == nil
	}
	if !p.CreationTimestamp.Equal(&o.CreationTimestamp) {
		return o.CreationTimestamp.Before(&p.CreationTimestamp)
	}
	return p.Namespace+"/"+p.Name < o.Namespace+"/"+o.Name
}

// FlatSubnets returns the subnets of a conflist's flat networks: berth
// plugins in macvlan or ipvlan mode with tenancy on. Their pods share one
// layer-2 segment across nodes with nothing on the wire to tell tenants
// apart, so an address of theirs that berth_remote does not know must not
// pass as a non-pod address.
func FlatSubnets(conflist []byte) ([]netip.Prefix, error) {
	type plugin struct {
		Type    string `json:"type"`
		Mode    string `json:"mode"`
		Tenancy *struct {
			Enabled *bool `json:"enabled"`
		} `json:"tenancy"`
		IPAM *struct {
			Subnet string `json:"subnet"`
		} `json:"ipam"`
	}
	var list struct {
		Plugins []plugin `json:"plugins"`
		plugin
	}
	if err := json.Unmarshal(conflist, &list); err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	plugins := list.Plugins
	if len(plugins) == 0 {
		plugins = []plugin{list.plugin} // a single network configuration
	}
	var out []netip.Prefix
	for _, p := range plugins {
		if p.Type != "berth" || (p.Mode != "macvlan" && p.Mode != "ipvlan") || p.IPAM == nil || p.IPAM.Subnet == "" {
			continue
		}
		if p.Tenancy != nil && p.Tenancy.Enabled != nil && !*p.Tenancy.Enabled {
			continue
		}
		s, err := netip.ParsePrefix(p.IPAM.Subnet)
		if err != nil {
			return nil, fmt.Errorf("conflist: ipam.subnet %q: %w", p.IPAM.Subnet, err)
		}
		out = append(out, s.Masked())
	}
	return out, nil
}

// RemoteStats is one sync of berth_remote.
type RemoteStats struct {
	Entries                 int // entries afterwards
	Added, Changed, Removed int
	Full                    bool // the map was read back, not diffed from memory
}

// ReconcileRemote makes m hold exactly want. have is what m is known to
// hold; nil reads it from m (a full reconcile, which also removes entries
// a previous berth-netd left for pods that went away while it was down).
// New and changed entries go in before stale ones go out, so a pod's own
// entry never gives way to its subnet's default entry in between. It
// returns what m holds afterwards, or nil when that is uncertain after an
// error (the next call should then read m again).
func ReconcileRemote(m RemoteMap, want, have map[netip.Prefix]uint32) (RemoteStats, map[netip.Prefix]uint32, error) {
	st := RemoteStats{Full: have == nil}
	if have == nil {
		var err error
		if have, err = m.ListRemote(); err != nil {
			return st, nil, fmt.Errorf("list berth_remote: %w", err)
		}
	}
	keys := slices.SortedFunc(maps.Keys(want), comparePrefix)
	for _, p := range keys {
		id := want[p]
		old, ok := have[p]
		if ok && old == id {
			continue
		}
		if err := m.SetRemote(p, id); err != nil {
			return st, nil, fmt.Errorf("set berth_remote %s: %w", p, err)
		}
		if ok {
			st.Changed++
		} else {
			st.Added++
		}
	}
	for p := range have {
		if _, ok := want[p]; ok {
			continue
		}
		if err := m.DeleteRemote(p); err != nil {
			return st, nil, fmt.Errorf("delete berth_remote %s: %w", p, err)
		}
		st.Removed++
	}
	st.Entries = len(want)
	return st, maps.Clone(want), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// remoteFullEvery is how often berth_remote is read back and reconciled
// whole, repairing any drift (and picking up tenant indexes a node's
// registry gained outside berth-netd, with registryMode "local").
const remoteFullEvery = time.Minute

// remoteDebounce coalesces a burst of pod events into one sync.
const remoteDebounce = 100 * time.Millisecond

// startRemote starts the pod informer and the loop that keeps berth_remote.
// synced are the other caches the computation reads (namespaces).
func (s *Syncer) startRemote(ctx context.Context, synced []cache.InformerSynced) error {
	if s.NodeName == "" {
		return errors.New("remote endpoints need this node's name")
	}
	pf := newPodInformer(s.Client, s.Resync, s.NodeName)
	inf := pf.Core().V1().Pods().Informer()
	if err := inf.SetTransform(SlimPod); err != nil {
		return fmt.Errorf("pod informer transform: %w", err)
	}
	lister := pf.Core().V1().Pods().Lister()
	s.remoteKick = make(chan struct{}, 1)
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.kickRemote() },
		UpdateFunc: func(o, n any) {
			if remoteChanged(o, n) {
				s.kickRemote()
			}
		},
		DeleteFunc: func(any) { s.kickRemote() },
	})
	if err != nil {
		return err
	}
	pf.Start(ctx.Done())
	go s.remoteLoop(ctx, lister, append(synced, inf.HasSynced))
	return nil
}

// remoteChanged reports whether an update touched what RemoteEndpoints
// reads: most pod updates are status changes of running pods (readiness,
// container restarts) that leave the slimmed pod as it was, and need no
// sync.
func remoteChanged(o, n any) bool {
	op, ok1 := o.(*corev1.Pod)
	np, ok2 := n.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	a, b := *op, *np
	a.ResourceVersion, b.ResourceVersion = "", ""
	return !reflect.DeepEqual(&a, &b)
}

func (s *Syncer) kickRemote() {
	if s.remoteKick == nil {
		return
	}
	select {
	case s.remoteKick <- struct{}{}:
	default:
	}
}

// remoteWant computes berth_remote from the caches and this node's
// registry.
func (s *Syncer) remoteWant(lister listersv1.PodLister) (map[netip.Prefix]uint32, error) {
	pods, err := lister.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var idx map[string]uint32
	if s.TenantRegistry != "" {
		if idx, err = (tenant.Registry{Path: s.TenantRegistry}).Snapshot(); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	in := RemoteInput{Self: s.NodeName, Pods: pods, NamespaceTenants: s.nsTenants, Indexes: idx, FlatSubnets: slices.Clone(s.flatSubnets)}
	s.mu.Unlock()
	if s.MappingFile == "" {
		in.NamespaceTenants = nil
	} else if in.NamespaceTenants == nil {
		in.NamespaceTenants = map[string]string{}
	}
	want, skips := RemoteEndpoints(in)
	for _, sk := range skips {
		s.Logger.Debug("remote pod's tenant not known here yet; its traffic is dropped by every tenant", "pod", sk.Name, "reason", sk.Reason)
	}
	return want, nil
}

// remoteLoop keeps berth_remote in step: after the caches have synced (a
// reconcile before that would delete the entries of pods not listed yet),
// on every kick, and whole every remoteFullEvery. Failures (maps not
// openable yet, a full map) are retried with a growing pause.
func (s *Syncer) remoteLoop(ctx context.Context, lister listersv1.PodLister, synced []cache.InformerSynced) {
	warn := time.AfterFunc(30*time.Second, func() {
		s.Logger.Warn("the pod cache has not synced after 30 s; remote endpoints are not programmed (does berth-netd's ClusterRole allow list and watch on pods?)")
	})
	ok := cache.WaitForCacheSync(ctx.Done(), synced...)
	warn.Stop()
	if !ok {
		return
	}
	// Run's first pass sets the namespace mapping and the flat subnets; a
	// reconcile without them would briefly mark every remote pod unknown
	// and drop the subnets' entries.
	select {
	case <-ctx.Done():
		return
	case <-s.filesDone:
	}
	full := time.NewTicker(remoteFullEvery)
	defer full.Stop()
	var have map[netip.Prefix]uint32 // nil: read the map back
	var pause time.Duration
	for {
		err := func() error {
			m, err := s.RemoteMaps()
			if err != nil {
				return err
			}
			want, err := s.remoteWant(lister)
			if err != nil {
				return err
			}
			st, now, err := ReconcileRemote(m, want, have)
			have = now
			if s.OnRemote != nil {
				s.OnRemote(st, err)
			}
			if err != nil {
				return err
			}
			lvl := s.Logger.Debug
			if st.Full && st.Added+st.Changed+st.Removed > 0 {
				lvl = s.Logger.Info
			}
			lvl("remote endpoints synced", "entries", st.Entries, "added", st.Added, "changed", st.Changed, "removed", st.Removed, "full", st.Full)
			return nil
		}()
		var retry <-chan time.Time
		if err != nil {
			have = nil
			pause = min(max(time.Second, 2*pause), time.Minute)
			s.Logger.Error("sync remote endpoints (berth_remote); retrying", "err", err, "in", pause)
			retry = time.After(pause)
		} else {
			pause = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
		case <-full.C:
			have = nil
		case <-s.remoteKick:
			// Let the rest of a burst (a Deployment scaling) arrive.
			select {
			case <-ctx.Done():
				return
			case <-time.After(remoteDebounce):
			}
		}
	}
}

// newPodInformer is a factory of its own for the pods, filtered by the API
// server (PodFieldSelector).
func newPodInformer(c kubernetes.Interface, resync time.Duration, self string) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(c, resync, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = PodFieldSelector(self)
	}))
}
