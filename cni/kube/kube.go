// Package kube is berth-netd's Kubernetes mode: it watches Nodes and
// Namespaces and keeps two files that the rest of berth already consumes,
// the overlay's peers file (read by berth-netd's reconciler) and the
// namespace → tenant mapping (read by berth-cni). Writing files rather
// than programming the kernel from the informer keeps one tested
// reconcile path, and lets a node keep its overlay when the API server is
// unreachable: the last files stay in place.
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
	"sort"
	"sync"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	// the namespace's own name).
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
	// NodeName, ConfTemplate and ConfFile render this node's CNI conflist
	// once its pod CIDR is allocated: the template's {{.PodCIDR}} and
	// {{.NodeName}} are filled in, as flannel and Calico's installers do.
	// An empty ConfFile disables it.
	NodeName     string
	ConfTemplate string
	ConfFile     string

	mu      sync.Mutex
	written map[string][]byte
	// Writes counts file rewrites (for tests and metrics).
	Writes int
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
		if s.ConfFile != "" {
			s.renderConf(list)
		}
	}
	nodes.Informer().AddEventHandler(handler(syncNodes))
	informersToSync := []cache.InformerSynced{nodes.Informer().HasSynced}

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
		}
		nss.Informer().AddEventHandler(handler(syncNS))
		informersToSync = append(informersToSync, nss.Informer().HasSynced)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informersToSync...) {
		return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
	}
	syncNodes()
	if syncNS != nil {
		syncNS()
	}
	return nil
}

// renderConf writes the conflist for this node once it has a pod CIDR.
// Until then no conflist exists, so kubelet keeps the node NotReady
// instead of starting pods that could not be routed.
func (s *Syncer) renderConf(nodes []*corev1.Node) {
	for _, n := range nodes {
		if n.Name != s.NodeName {
			continue
		}
		cidr := podCIDR(n)
		if cidr == "" {
			return
		}
		b, err := RenderConf(s.ConfTemplate, ConfData{PodCIDR: cidr, NodeName: n.Name})
		if err != nil {
			s.Logger.Error("render CNI conflist", "err", err)
			return
		}
		s.writeRaw(s.ConfFile, b)
		return
	}
}

// ConfData is what a conflist template can use.
type ConfData struct {
	PodCIDR  string
	NodeName string
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
func (s *Syncer) writeRaw(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.written[path]; ok && bytes.Equal(old, b) {
		return
	}
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		s.written[path] = b
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.Logger.Error("write", "file", path, "err", err)
		return
	}
	if err := atomicfile.WriteBytes(path, b, 0o644); err != nil {
		s.Logger.Error("write", "file", path, "err", err)
		return
	}
	s.written[path] = b
	s.Writes++
	s.Logger.Info("updated from the API", "file", path, "bytes", len(b))
}
