// Package kube is berth-netd's Kubernetes mode: it watches Nodes and
// Namespaces and keeps the files that the rest of berth already consumes,
// the overlay's peers file (read by berth-netd's reconciler), the
// namespace → tenant mapping and the tenant registry (read by berth-cni),
// and this node's conflists. Writing files rather than programming the
// kernel from the informer keeps one tested reconcile path, and lets a
// node keep its overlay when the API server is unreachable: the last files
// stay in place. Its one write to the API is the cluster's tenant table
// (tenants.go), so that a tenant has the same index on every node.
package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/tenant"

	"github.com/berthdev/berth/internal/atomicfile"
)

// Annotations and labels berth reads from the API.
const (
	// AnnotationUnderlayIP on a Node overrides the address other nodes
	// send its VXLAN traffic to (default: its first InternalIP).
	AnnotationUnderlayIP = "berth.dev/underlay-ip"
	// LabelTenant on a Namespace puts its pods in that tenant (default:
	// the default tenant, see NamespaceTenants).
	LabelTenant = "berth.dev/tenant"
)

// Skip says why an object (a Node or a Namespace) was left out.
type Skip struct {
	Name, Reason string
}

// NodePeers turns Nodes into overlay peers. A node without a pod CIDR (not
// yet allocated) or without an underlay address cannot be routed to yet;
// it is left out and reported, and joins once it has both.
func NodePeers(nodes []*corev1.Node) ([]overlay.Peer, []Skip) {
	var peers []overlay.Peer
	var skips []Skip
	for _, n := range nodes {
		cidr := podCIDR(n)
		if cidr == "" {
			skips = append(skips, Skip{n.Name, "no IPv4 pod CIDR allocated"})
			continue
		}
		ip, err := underlayIP(n)
		if err != nil {
			skips = append(skips, Skip{n.Name, err.Error()})
			continue
		}
		peers = append(peers, overlay.Peer{NodeName: n.Name, UnderlayIP: ip, PodCIDR: cidr})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].NodeName < peers[j].NodeName })
	return peers, skips
}

func podCIDR(n *corev1.Node) string {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			return p.Masked().String()
		}
	}
	return ""
}

func underlayIP(n *corev1.Node) (string, error) {
	if v, ok := n.Annotations[AnnotationUnderlayIP]; ok {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return "", fmt.Errorf("annotation %s: %q is not an IPv4 address", AnnotationUnderlayIP, v)
		}
		return ip.String(), nil
	}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip.String(), nil
		}
	}
	return "", fmt.Errorf("no IPv4 InternalIP and no %s annotation", AnnotationUnderlayIP)
}

// NamespaceTenants maps every namespace to its tenant: the berth.dev/tenant
// label's value, or the default tenant. In a cluster, isolation is opt-in:
// without the mapping, berth-cni would make each namespace its own tenant,
// cutting every pod off from kube-system (cluster DNS) and from every other
// namespace. Invalid tenant names are reported and fall back to the default
// tenant: berth-cni would refuse the whole file otherwise.
func NamespaceTenants(nss []*corev1.Namespace) (map[string]string, []Skip) {
	m := map[string]string{}
	var skips []Skip
	for _, ns := range nss {
		t, ok := ns.Labels[LabelTenant]
		if !ok {
			m[ns.Name] = tenant.Default
			continue
		}
		if !tenant.Valid(t) {
			skips = append(skips, Skip{ns.Name, fmt.Sprintf("label %s: %q is not a valid tenant name; the namespace stays in the default tenant", LabelTenant, t)})
			m[ns.Name] = tenant.Default
			continue
		}
		m[ns.Name] = t
	}
	return m, skips
}

// Syncer keeps the peers and mapping files in step with the API.
type Syncer struct {
	Client      kubernetes.Interface
	PeersFile   string
	MappingFile string // empty: namespaces are not watched
	Logger      *slog.Logger
	// Resync is the informers' resync period (0: 10 minutes).
	Resync time.Duration
	// NodeName and Confs render this node's CNI conflists once its pod
	// CIDR is allocated, filling in ConfData as flannel and Calico's
	// installers do. None: no conflist is written.
	NodeName string
	Confs    []Conf

	// Tenants, with MappingFile and TenantRegistry, assigns tenant indexes
	// cluster-wide (see tenants.go): every tenant a Namespace label names
	// gets one in the allocator's ConfigMap, and the ConfigMap is mirrored
	// into TenantRegistry, which berth-cni reads with
	// tenancy.registryMode "cluster". Nil: berth-cni assigns indexes on
	// each node itself.
	Tenants        *TenantAllocator
	TenantRegistry string

	// RemoteMaps, with NodeName, makes the Syncer watch the pods of the
	// other nodes and keep berth_remote, the BPF map of their tenants
	// (remote.go); it opens the pinned maps, and is called again after a
	// failure. TenantRegistry is then the registry whose indexes give the
	// identities (this node's, as for its own pods). Nil: no pods are
	// watched.
	RemoteMaps func() (RemoteMap, error)
	// OnRemote, if set, is told of every berth_remote sync (metrics).
	OnRemote func(RemoteStats, error)

	mu      sync.Mutex
	written map[string][]byte
	// Writes counts file rewrites (for tests and metrics).
	Writes int
	// wantTenants is what the namespaces name; kick wakes the assigner.
	wantTenants []string
	kick        chan struct{}
	// nsTenants and flatSubnets are the last namespace mapping and the
	// flat networks' subnets, for berth_remote; remoteKick wakes its loop.
	nsTenants   map[string]string
	flatSubnets []netip.Prefix
	remoteKick  chan struct{}
	// filesDone is closed once Run has written the first files, so the
	// namespace mapping and the flat subnets are known.
	filesDone chan struct{}
}

// Conf is one conflist to render: a template and the file to write.
type Conf struct {
	Template string
	File     string
}

// Run starts the informers and rewrites the files after every change,
// until ctx is done. It returns once the caches have synced and the first
// files are written, with the informers still running; errors after that
// are logged.
func (s *Syncer) Run(ctx context.Context) error {
	if s.Resync == 0 {
		s.Resync = 10 * time.Minute
	}
	s.written = map[string][]byte{}
	s.filesDone = make(chan struct{})
	f := informers.NewSharedInformerFactory(s.Client, s.Resync)
	nodes := f.Core().V1().Nodes()
	nodeLister := nodes.Lister()
	syncNodes := func() {
		list, err := nodeLister.List(labels.Everything())
		if err != nil {
			s.Logger.Error("list nodes", "err", err)
			return
		}
		peers, skips := NodePeers(list)
		for _, sk := range skips {
			s.Logger.Info("node is not an overlay peer yet", "node", sk.Name, "reason", sk.Reason)
		}
		s.write(s.PeersFile, peers)
		if len(s.Confs) > 0 {
			s.renderConf(list)
		}
	}
	nodes.Informer().AddEventHandler(handler(syncNodes))
	informersToSync := []cache.InformerSynced{nodes.Informer().HasSynced}

	if s.Tenants != nil {
		if s.MappingFile == "" || s.TenantRegistry == "" {
			return fmt.Errorf("cluster-wide tenant indexes need the namespace mapping file and the tenant registry")
		}
		ns, name := s.Tenants.ref()
		// A factory of its own: only the one ConfigMap, in its namespace,
		// is watched (and the RBAC grant is for that namespace only).
		cf := informers.NewSharedInformerFactoryWithOptions(s.Client, s.Resync, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}))
		table := cf.Core().V1().ConfigMaps().Informer()
		onTable := func(obj any) {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok || cm.Name != name {
				return
			}
			asg, skips := ParseAssignment(cm)
			for _, sk := range skips {
				s.Logger.Warn("tenant table entry ignored", "configmap", ns+"/"+name, "key", sk.Name, "reason", sk.Reason)
			}
			s.mirror(asg.Indexes)
		}
		table.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    onTable,
			UpdateFunc: func(_, n any) { onTable(n) },
			// A deleted table is recreated by the next assignment, from
			// this node's registry (see Ensure); nothing to undo here.
			DeleteFunc: func(any) {
				s.Logger.Warn("the tenant table was deleted; it is recreated from the nodes' registries", "configmap", ns+"/"+name)
				s.kickAssign()
			},
		})
		informersToSync = append(informersToSync, table.HasSynced)
		s.kick = make(chan struct{}, 1)
		cf.Start(ctx.Done())
		go s.assignLoop(ctx)
	}

	var syncNS func()
	if s.MappingFile != "" {
		nss := f.Core().V1().Namespaces()
		nsLister := nss.Lister()
		syncNS = func() {
			list, err := nsLister.List(labels.Everything())
			if err != nil {
				s.Logger.Error("list namespaces", "err", err)
				return
			}
			m, skips := NamespaceTenants(list)
			for _, sk := range skips {
				s.Logger.Warn("namespace tenant label ignored", "namespace", sk.Name, "reason", sk.Reason)
			}
			s.write(s.MappingFile, m)
			if s.Tenants != nil {
				s.setWantTenants(m)
			}
			s.mu.Lock()
			s.nsTenants = m
			s.mu.Unlock()
			s.kickRemote()
		}
		nss.Informer().AddEventHandler(handler(syncNS))
		informersToSync = append(informersToSync, nss.Informer().HasSynced)
	}
	if s.RemoteMaps != nil {
		// Not among the caches Run waits for: the files above must not
		// wait for (or fail with) the pod list, the largest one; the
		// remote loop waits for it itself.
		var synced []cache.InformerSynced
		if s.MappingFile != "" {
			synced = append(synced, f.Core().V1().Namespaces().Informer().HasSynced)
		}
		if err := s.startRemote(ctx, synced); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informersToSync...) {
		return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
	}
	syncNodes()
	if syncNS != nil {
		syncNS()
	}
	close(s.filesDone)
	return nil
}

// renderConf writes the conflists for this node once it has a pod CIDR.
// Until then no conflist exists, so kubelet keeps the node NotReady
// instead of starting pods that could not be routed. They are written in
// the order of their file names and a failure stops the rest: the runtime
// takes the first file in that order as the default network, so a later
// network (macvlan) must never be on disk without the ones before it.
func (s *Syncer) renderConf(nodes []*corev1.Node) {
	for _, n := range nodes {
		if n.Name != s.NodeName {
			continue
		}
		cidr := podCIDR(n)
		if cidr == "" {
			return
		}
		confs := slices.Clone(s.Confs)
		sort.SliceStable(confs, func(i, j int) bool { return filepath.Base(confs[i].File) < filepath.Base(confs[j].File) })
		var flat []netip.Prefix
		defer func() { s.setFlatSubnets(flat) }()
		for _, c := range confs {
			b, err := RenderConf(c.Template, ConfData{PodCIDR: cidr, NodeName: n.Name})
			if err != nil {
				s.Logger.Error("render CNI conflist; the ones sorting after it are not written", "file", c.File, "err", err)
				return
			}
			if !s.writeRaw(c.File, b) {
				return
			}
			sub, err := FlatSubnets(b)
			if err != nil {
				s.Logger.Error("read the flat networks of a conflist", "file", c.File, "err", err)
			}
			flat = append(flat, sub...)
		}
		return
	}
}

// setFlatSubnets records the flat networks' subnets of the written
// conflists and wakes the remote loop when they changed.
func (s *Syncer) setFlatSubnets(flat []netip.Prefix) {
	slices.SortFunc(flat, comparePrefix)
	s.mu.Lock()
	same := slices.Equal(flat, s.flatSubnets)
	s.flatSubnets = flat
	s.mu.Unlock()
	if !same {
		s.kickRemote()
	}
}

// ConfData is what a conflist template can use.
type ConfData struct {
	PodCIDR  string
	NodeName string
}

// PodCIDRThirdOctet is the third octet of the node's IPv4 pod CIDR, for
// templates that carve a per-node range out of a network of their own
// ("rangeStart": "198.19.{{.PodCIDRThirdOctet}}.1"). It is unique per
// node when the cluster CIDR is a /16 (or longer) cut into node CIDRs of
// /24 or shorter, kube-controller-manager's default and kind's
// (10.244.0.0/16, /24 per node). A longer node CIDR (several nodes in one
// /24) fails the render instead of handing two nodes one range.
func (d ConfData) PodCIDRThirdOctet() (int, error) {
	p, err := netip.ParsePrefix(d.PodCIDR)
	if err != nil || !p.Addr().Is4() {
		return 0, fmt.Errorf("PodCIDRThirdOctet: %q is not an IPv4 CIDR", d.PodCIDR)
	}
	if p.Bits() > 24 {
		return 0, fmt.Errorf("PodCIDRThirdOctet: pod CIDR %s is longer than /24, so its third octet is not unique to this node", d.PodCIDR)
	}
	return int(p.Masked().Addr().As4()[2]), nil
}

// RenderConf fills a conflist template and checks that the result is JSON.
func RenderConf(tmpl string, d ConfData) ([]byte, error) {
	t, err := template.New("conflist").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("conflist template: %w", err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("conflist template: %w", err)
	}
	if !json.Valid(buf.Bytes()) {
		return nil, fmt.Errorf("conflist template for %s does not render to JSON", d.NodeName)
	}
	return buf.Bytes(), nil
}

// handler calls sync after any add, update or delete. The handlers run on
// the informer's goroutine, one event at a time, and sync reads the whole
// lister, so a burst of events ends in one consistent file.
func handler(sync func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { sync() },
		UpdateFunc: func(any, any) { sync() },
		DeleteFunc: func(any) { sync() },
	}
}

// write replaces path with v's JSON (see writeRaw).
func (s *Syncer) write(path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		s.Logger.Error("encode", "file", path, "err", err)
		return
	}
	s.writeRaw(path, append(b, '\n'))
}

// writeRaw replaces path with b when it differs from what is there: a
// temporary file in the same directory, fsync, rename. The reconciler
// watches the directory, so an unchanged file must not be touched.
// It reports whether path holds b afterwards.
func (s *Syncer) writeRaw(path string, b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.written[path]; ok && bytes.Equal(old, b) {
		return true
	}
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		s.written[path] = b
		return true
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.Logger.Error("write", "file", path, "err", err)
		return false
	}
	if err := atomicfile.WriteBytes(path, b, 0o644); err != nil {
		s.Logger.Error("write", "file", path, "err", err)
		return false
	}
	s.written[path] = b
	s.Writes++
	s.Logger.Info("updated from the API", "file", path, "bytes", len(b))
	return true
}

// setWantTenants records the tenants the namespace mapping names and wakes
// the assigner if that set changed.
func (s *Syncer) setWantTenants(mapping map[string]string) {
	set := map[string]bool{tenant.Default: true}
	for _, t := range mapping {
		set[t] = true
	}
	want := make([]string, 0, len(set))
	for t := range set {
		want = append(want, t)
	}
	sort.Strings(want)
	s.mu.Lock()
	same := slices.Equal(want, s.wantTenants)
	s.wantTenants = want
	s.mu.Unlock()
	if !same {
		s.kickAssign()
	}
}

func (s *Syncer) kickAssign() {
	select {
	case s.kick <- struct{}{}:
	default: // a run is already pending; it reads the latest set
	}
}

// assignLoop gives the wanted tenants cluster-wide indexes and mirrors the
// table, on every kick; the API calls run here rather than on an informer
// goroutine so a slow or failing API server delays nothing else. Failures
// are retried with a growing pause (2 s doubling up to 1 min) until they
// succeed or the set is served by another node's write.
func (s *Syncer) assignLoop(ctx context.Context) {
	reg := tenant.Registry{Path: s.TenantRegistry}
	var pause time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		for {
			s.mu.Lock()
			want := slices.Clone(s.wantTenants)
			s.mu.Unlock()
			seed, err := reg.List()
			if err != nil {
				s.Logger.Warn("tenant registry unreadable; not used as a seed", "registry", s.TenantRegistry, "err", err)
				seed = nil
			}
			table, err := s.Tenants.Ensure(ctx, want, seed)
			if err == nil {
				pause = 0
				s.mirror(table)
				break
			}
			if ctx.Err() != nil {
				return
			}
			pause = min(max(2*time.Second, 2*pause), time.Minute)
			s.Logger.Error("assign cluster-wide tenant indexes; retrying", "err", err, "in", pause)
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
	}
}

// mirror copies the cluster's table into this node's registry. The
// cluster wins every disagreement: a local index that differs would put
// this node's pods of that tenant on another tenant's VNI elsewhere.
func (s *Syncer) mirror(table map[string]uint32) {
	s.mu.Lock()
	defer s.mu.Unlock() // one mirror at a time, so their logs read in order
	conflicts, changed, err := tenant.Registry{Path: s.TenantRegistry}.Mirror(table)
	if err != nil {
		s.Logger.Error("mirror the cluster's tenant table", "registry", s.TenantRegistry, "err", err)
		return
	}
	for _, c := range conflicts {
		if c.Dropped {
			s.Logger.Warn("local tenant index taken by the cluster assignment; the local entry is dropped (pods of it on this node keep their old identity until recreated)",
				"tenant", c.Tenant, "localIndex", c.Local)
			continue
		}
		s.Logger.Warn("local tenant index differs from the cluster assignment; the cluster wins (pods of it on this node keep their old identity until recreated)",
			"tenant", c.Tenant, "localIndex", c.Local, "clusterIndex", c.Cluster)
	}
	if changed {
		s.Writes++
		s.Logger.Info("tenant registry follows the cluster's table", "registry", s.TenantRegistry, "tenants", len(table))
		s.kickRemote()
	}
}
