package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/berthdev/berth/cni/config"
	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/tenant"
)

// shippedTemplates reads the conflist templates cni/deploy ships.
func shippedTemplates(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../deploy/conflist.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

// renderShipped renders one shipped template for a node and returns the
// libcni list and berth's parse of its first plugin entry.
func renderShipped(t *testing.T, tmpl, podCIDR, nodeName string) (*libcni.NetworkConfigList, *config.NetConf) {
	t.Helper()
	b, err := RenderConf(tmpl, ConfData{PodCIDR: podCIDR, NodeName: nodeName})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	if list.Plugins[0].Network.Type != "berth" {
		t.Fatalf("first plugin is %q", list.Plugins[0].Network.Type)
	}
	// The runtime hands each plugin its entry with name and cniVersion.
	var entry map[string]any
	json.Unmarshal(list.Plugins[0].Bytes, &entry)
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	stdin, _ := json.Marshal(entry)
	conf, err := config.Parse(stdin)
	if err != nil {
		t.Fatalf("berth rejects the shipped conflist: %v", err)
	}
	return list, conf
}

// TestShippedConflists renders every template cni/deploy ships and checks
// that libcni loads it and berth's own parser accepts its plugin entry, so
// a typo in the manifest fails here and not on a node; that the VXLAN
// network is the default (it sorts first, as berth-cri picks); that both
// read cluster-wide tenant indexes; and that the macvlan network's
// per-node ranges sit in its subnet without overlapping.
func TestShippedConflists(t *testing.T) {
	tmpls := shippedTemplates(t)
	var keys []string
	for k := range tmpls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"10-berth.conflist.tmpl", "20-berth-macvlan.conflist.tmpl"}; !slices.Equal(keys, want) {
		t.Fatalf("templates %v, want %v", keys, want)
	}
	names := map[string]string{}
	for _, k := range keys {
		list, conf := renderShipped(t, tmpls[k], "10.244.1.0/24", "kind-worker")
		names[k] = list.Name
		if conf.Tenancy.RegistryMode != tenant.ModeCluster {
			t.Errorf("%s: tenancy.registryMode %q, want %q (indexes must agree across nodes)", k, conf.Tenancy.RegistryMode, tenant.ModeCluster)
		}
		if !slices.ContainsFunc(list.Plugins, func(p *libcni.NetworkConfig) bool { return p.Network.Type == "loopback" }) {
			t.Errorf("%s: no loopback plugin", k)
		}
	}
	// The default network (first file) is the VXLAN one.
	if _, conf := renderShipped(t, tmpls[keys[0]], "10.244.1.0/24", "n"); conf.Mode != config.ModeVXLAN || names[keys[0]] != "berth" {
		t.Errorf("the first conflist is %q in mode %s, want berth in vxlan", names[keys[0]], conf.Mode)
	}
	if names[keys[1]] != "berth-macvlan" {
		t.Errorf("second network is %q, want berth-macvlan", names[keys[1]])
	}

	// macvlan: kind's node CIDRs 10.244.{0,1,2}.0/24 and a few more.
	type span struct{ lo, hi netip.Addr }
	var spans []span
	for _, cidr := range []string{"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.255.0/24"} {
		_, conf := renderShipped(t, tmpls[keys[1]], cidr, "n")
		if conf.Mode != config.ModeMacvlan || conf.Master != "eth0" {
			t.Errorf("%s: mode %s master %q", cidr, conf.Mode, conf.Master)
		}
		subnet := netip.MustParsePrefix(conf.IPAM.Subnet)
		lo, hi := netip.MustParseAddr(conf.IPAM.RangeStart), netip.MustParseAddr(conf.IPAM.RangeEnd)
		if !subnet.Contains(lo) || !subnet.Contains(hi) || hi.Less(lo) {
			t.Errorf("%s: range %s-%s outside %s", cidr, lo, hi, subnet)
		}
		if !netip.MustParsePrefix("198.18.0.0/15").Contains(subnet.Addr()) {
			t.Errorf("%s: subnet %s is not in 198.18.0.0/15", cidr, subnet)
		}
		for _, s := range spans {
			if !(hi.Less(s.lo) || s.hi.Less(lo)) {
				t.Errorf("%s: range %s-%s overlaps %s-%s", cidr, lo, hi, s.lo, s.hi)
			}
		}
		spans = append(spans, span{lo, hi})
		// The allocator accepts it (the gateway falls inside node 0's
		// range and is left out of it).
		c := *conf.IPAM
		c.DataDir = t.TempDir()
		if _, err := ipam.New("berth-macvlan", &c); err != nil {
			t.Errorf("%s: ipam: %v", cidr, err)
		}
	}
}

// TestShippedDaemonSet checks that berth-netd is told to render every
// shipped template, each into the CNI conf dir under its own name, and to
// keep the cluster's tenant table.
func TestShippedDaemonSet(t *testing.T) {
	raw, err := os.ReadFile("../deploy/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(raw, &ds); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "berth-netd" {
			args = c.Args
		}
	}
	var tmpls, files []string
	flags := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--cni-conflist-template":
			tmpls = append(tmpls, path.Base(v))
		case "--cni-conflist":
			files = append(files, path.Base(v))
		default:
			flags[k] = v
		}
	}
	var want []string
	for k := range shippedTemplates(t) {
		want = append(want, k)
	}
	sort.Strings(want)
	if !slices.Equal(tmpls, want) {
		t.Errorf("templates rendered %v, shipped %v", tmpls, want)
	}
	for i := range tmpls {
		if i < len(files) && files[i]+".tmpl" != tmpls[i] {
			t.Errorf("pair %d: %s → %s", i, tmpls[i], files[i])
		}
	}
	if got := flags["--tenant-configmap"]; got != fmt.Sprintf("%s/%s", DefaultTenantsNamespace, DefaultTenantsName) {
		t.Errorf("--tenant-configmap=%q", got)
	}
	if flags["--tenant-registry"] != tenant.DefaultRegistry {
		t.Errorf("--tenant-registry=%q, want the plugin's default %s", flags["--tenant-registry"], tenant.DefaultRegistry)
	}
}

// shippedRBAC reads the Roles and ClusterRoles of cni/deploy/rbac.yaml.
func shippedRBAC(t *testing.T) (roles map[string]rbacv1.Role, clusterRoles map[string]rbacv1.ClusterRole) {
	t.Helper()
	raw, err := os.ReadFile("../deploy/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	roles, clusterRoles = map[string]rbacv1.Role{}, map[string]rbacv1.ClusterRole{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			roles[r.Name] = r
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			clusterRoles[r.Name] = r
		}
	}
	return roles, clusterRoles
}

// rbacAllows decides a core-group request as the API server's RBAC
// authorizer does: some rule must name the resource and the verb and, if it
// lists resourceNames, the request's name. A create has no name (it is in
// the body, not the URL); a list or watch has the one its field selector
// metadata.name=<name> fixes, if any.
func rbacAllows(rules []rbacv1.PolicyRule, verb, resource, name string) bool {
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, "") || !slices.Contains(r.Resources, resource) || !slices.Contains(r.Verbs, verb) {
			continue
		}
		if len(r.ResourceNames) == 0 || (name != "" && slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

// TestShippedRBAC checks berth-netd's grants on configmaps: every verb on
// its tenant table, nothing on the namespace's other ConfigMaps but create
// (which RBAC cannot limit to a name), and in particular no list or watch
// of all of them.
func TestShippedRBAC(t *testing.T) {
	roles, clusterRoles := shippedRBAC(t)
	cr := clusterRoles["berth-netd"]
	// Pods: list and watch, cluster-wide, for berth_remote; nothing else.
	for verb, want := range map[string]bool{"list": true, "watch": true, "get": false, "update": false, "delete": false, "create": false} {
		if got := rbacAllows(cr.Rules, verb, "pods", ""); got != want {
			t.Errorf("ClusterRole berth-netd: %s pods allowed=%v, want %v", verb, got, want)
		}
	}
	role, ok := roles["berth-netd-tenants"]
	if !ok || role.Namespace != DefaultTenantsNamespace {
		t.Fatalf("no Role berth-netd-tenants in %s: %v", DefaultTenantsNamespace, roles)
	}
	for _, tc := range []struct {
		verb, name string
		want       bool
	}{
		{"get", DefaultTenantsName, true},
		{"list", DefaultTenantsName, true},
		{"watch", DefaultTenantsName, true},
		{"update", DefaultTenantsName, true},
		{"patch", DefaultTenantsName, true},
		{"create", "", true},
		{"delete", DefaultTenantsName, false},
		{"get", "berth-cni", false},
		{"list", "", false}, // every ConfigMap of the namespace
		{"watch", "", false},
		{"update", "berth-cni", false},
	} {
		if got := rbacAllows(role.Rules, tc.verb, "configmaps", tc.name); got != tc.want {
			t.Errorf("%s configmaps %q: allowed=%v, want %v", tc.verb, tc.name, got, tc.want)
		}
	}
}

// TestPodRequestsFitRBAC runs the Syncer with remote endpoints against a
// fake API and checks every Pod request it made against the shipped
// ClusterRole, and that it lists and watches with the field selector that
// keeps its own node's, host-network and finished pods out.
func TestPodRequestsFitRBAC(t *testing.T) {
	_, clusterRoles := shippedRBAC(t)
	rules := clusterRoles["berth-netd"].Rules
	client := fake.NewClientset(node("w1", "10.244.1.0/24", "172.18.0.2", nil), pod("tnh-a", "p", "w2", []string{"198.19.2.5"}))
	dir := t.TempDir()
	f := newFakeRemote(nil)
	s := &Syncer{Client: client, PeersFile: filepath.Join(dir, "peers.json"), MappingFile: filepath.Join(dir, "ns.json"),
		Logger: discard(), NodeName: "w1", TenantRegistry: filepath.Join(dir, "tenants.json"),
		RemoteMaps: func() (RemoteMap, error) { return f, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.snapshot()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("berth_remote never filled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, a := range client.Actions() {
		if a.GetResource().Resource != "pods" {
			continue
		}
		seen[a.GetVerb()] = true
		var sel string
		switch a := a.(type) {
		case k8stesting.ListAction:
			sel = a.GetListRestrictions().Fields.String()
		case k8stesting.WatchAction:
			sel = a.GetWatchRestrictions().Fields.String()
		}
		if a.GetNamespace() != "" || !rbacAllows(rules, a.GetVerb(), "pods", "") {
			t.Errorf("%s pods in %q is not allowed by the shipped ClusterRole", a.GetVerb(), a.GetNamespace())
		}
		if want := fields.ParseSelectorOrDie(PodFieldSelector("w1")).String(); sel != want {
			t.Errorf("%s pods with field selector %q, want %q", a.GetVerb(), sel, want)
		}
	}
	if !seen["list"] || !seen["watch"] {
		t.Errorf("no list and watch of pods: %v", seen)
	}
}

// TestTenantTableRequestsFitRBAC runs the Syncer with cluster-wide tenant
// indexes against a fake API where the table does not exist yet, so it is
// created, listed, watched, read and updated, and checks every ConfigMap
// request it made against the shipped Role, as the API server would: the
// informer must ask for the table by name, or the narrowed Role refuses
// its list and watch.
func TestTenantTableRequestsFitRBAC(t *testing.T) {
	roles, _ := shippedRBAC(t)
	rules := roles["berth-netd-tenants"].Rules
	api := newAPIServer(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelTenant: "green"}}})
	dir := t.TempDir()
	reg := filepath.Join(dir, "tenants.json")
	s := &Syncer{Client: api, PeersFile: filepath.Join(dir, "peers.json"), MappingFile: filepath.Join(dir, "ns.json"),
		Logger: discard(), Tenants: &TenantAllocator{Client: api, Logger: discard()}, TenantRegistry: reg}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := tenant.Registry{Path: reg}.List()
		if _, ok := m["green"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("green never reached the registry")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A second tenant makes an Update of the existing table.
	api.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blog", Labels: map[string]string{LabelTenant: "purple"}}}, metav1.CreateOptions{})
	for {
		m, _ := tenant.Registry{Path: reg}.List()
		if _, ok := m["purple"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("purple never reached the registry")
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, a := range api.Actions() {
		if a.GetResource().Resource != "configmaps" {
			continue
		}
		name := ""
		switch a := a.(type) {
		case k8stesting.ListAction:
			if v, ok := a.GetListRestrictions().Fields.RequiresExactMatch("metadata.name"); ok {
				name = v
			}
		case k8stesting.WatchAction:
			if v, ok := a.GetWatchRestrictions().Fields.RequiresExactMatch("metadata.name"); ok {
				name = v
			}
		case k8stesting.GetAction:
			name = a.GetName()
		case k8stesting.UpdateAction:
			name = a.GetObject().(*corev1.ConfigMap).Name
		}
		seen[a.GetVerb()] = true
		if a.GetNamespace() != DefaultTenantsNamespace || !rbacAllows(rules, a.GetVerb(), "configmaps", name) {
			t.Errorf("%s configmaps %s/%q is not allowed by the shipped Role", a.GetVerb(), a.GetNamespace(), name)
		}
	}
	for _, v := range []string{"list", "watch", "get", "create", "update"} {
		if !seen[v] {
			t.Errorf("the scenario made no %s of a ConfigMap; seen %v", v, seen)
		}
	}
}
