package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/berthdev/berth/cni/overlay"
)

func node(name, cidr, ip string, ann map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if cidr != "" {
		n.Spec.PodCIDR = cidr
		n.Spec.PodCIDRs = []string{cidr}
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

func TestNodePeers(t *testing.T) {
	dual := node("dual", "", "198.18.0.4", nil)
	dual.Spec.PodCIDRs = []string{"fd00::/64", "10.244.3.0/24"}
	peers, skips := NodePeers([]*corev1.Node{
		node("b", "10.244.2.0/24", "198.18.0.3", nil),
		node("a", "10.244.1.7/24", "198.18.0.2", nil), // unmasked CIDR
		node("override", "10.244.4.0/24", "198.18.0.5", map[string]string{AnnotationUnderlayIP: "198.19.0.5"}),
		node("no-cidr", "", "198.18.0.6", nil),
		node("no-ip", "10.244.5.0/24", "", nil),
		node("bad-ann", "10.244.6.0/24", "198.18.0.7", map[string]string{AnnotationUnderlayIP: "nope"}),
		dual,
	})
	want := []overlay.Peer{
		{NodeName: "a", UnderlayIP: "198.18.0.2", PodCIDR: "10.244.1.0/24"},
		{NodeName: "b", UnderlayIP: "198.18.0.3", PodCIDR: "10.244.2.0/24"},
		{NodeName: "dual", UnderlayIP: "198.18.0.4", PodCIDR: "10.244.3.0/24"},
		{NodeName: "override", UnderlayIP: "198.19.0.5", PodCIDR: "10.244.4.0/24"},
	}
	if !reflect.DeepEqual(peers, want) {
		t.Errorf("peers = %+v\nwant %+v", peers, want)
	}
	if len(skips) != 3 {
		t.Errorf("skips = %+v, want no-cidr, no-ip and bad-ann", skips)
	}
	// What is written must be a valid peers file for the reconciler.
	b, _ := json.Marshal(peers)
	if _, err := overlay.ParsePeers(b); err != nil {
		t.Errorf("the reconciler refuses the result: %v", err)
	}
}

func TestRenderConf(t *testing.T) {
	for _, tc := range []struct {
		tmpl, cidr string
		want       string // "" when the render must fail
	}{
		{`{"subnet":"{{.PodCIDR}}"}`, "10.0.0.0/24", `{"subnet":"10.0.0.0/24"}`},
		{`{"subnet":"{{.Nope}}"}`, "10.0.0.0/24", ""},
		{`{"subnet":{{.PodCIDR}}}`, "10.0.0.0/24", ""}, // not JSON once rendered
		{`{{`, "10.0.0.0/24", ""},
		// The per-node range of a network of its own (the macvlan one).
		{`{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}`, "10.244.2.0/24", `{"rangeStart":"198.19.2.1"}`},
		{`{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}`, "10.244.0.0/24", `{"rangeStart":"198.19.0.1"}`},
		{`{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}`, "10.244.6.0/23", `{"rangeStart":"198.19.6.1"}`},
		{`{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}`, "10.244.2.64/26", ""}, // several nodes per /24
		{`{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}`, "fd00::/64", ""},
		// A template that does not use it renders for any pod CIDR.
		{`{"subnet":"{{.PodCIDR}}"}`, "10.244.2.64/26", `{"subnet":"10.244.2.64/26"}`},
	} {
		got, err := RenderConf(tc.tmpl, ConfData{PodCIDR: tc.cidr, NodeName: "n"})
		if tc.want == "" {
			if err == nil {
				t.Errorf("RenderConf(%q, %s) = %s, want an error", tc.tmpl, tc.cidr, got)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("RenderConf(%q, %s) = %s, %v; want %s", tc.tmpl, tc.cidr, got, err, tc.want)
		}
	}
}

func TestNamespaceTenants(t *testing.T) {
	ns := func(name, tenant string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if tenant != "" {
			n.Labels = map[string]string{LabelTenant: tenant}
		}
		return n
	}
	m, skips := NamespaceTenants([]*corev1.Namespace{ns("team-a-dev", "team-a"), ns("team-a-prod", "team-a"), ns("plain", ""), ns("bad", "Not Valid")})
	if want := map[string]string{"team-a-dev": "team-a", "team-a-prod": "team-a", "plain": "default", "bad": "default"}; !reflect.DeepEqual(m, want) {
		t.Errorf("mapping = %v, want %v", m, want)
	}
	if len(skips) != 1 || skips[0].Name != "bad" {
		t.Errorf("skips = %v", skips)
	}
}

// TestSyncer runs the informers against a fake API and checks that the
// files follow adds, updates and deletes, and are not rewritten when
// nothing they hold changed.
func TestSyncer(t *testing.T) {
	dir := t.TempDir()
	client := fake.NewClientset(node("n1", "10.244.1.0/24", "198.18.0.2", nil))
	s := &Syncer{Client: client, PeersFile: filepath.Join(dir, "peers.json"), MappingFile: filepath.Join(dir, "tenants.json"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		NodeName: "n2", Confs: []Conf{{File: filepath.Join(dir, "net.d", "10-berth.conflist"),
			Template: `{"cniVersion":"1.1.0","name":"berth","plugins":[{"type":"berth","mode":"vxlan","nodeName":"{{.NodeName}}","ipam":{"subnet":"{{.PodCIDR}}"}}]}`}}}
	confFile := s.Confs[0].File
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	peersNow := func() []overlay.Peer {
		b, err := os.ReadFile(s.PeersFile)
		if err != nil {
			return nil
		}
		p, _ := overlay.ParsePeers(b)
		return p
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
	if p := peersNow(); len(p) != 1 || p[0].NodeName != "n1" {
		t.Fatalf("initial peers = %v", p)
	}
	api := client.CoreV1()
	api.Nodes().Create(ctx, node("n2", "", "198.18.0.3", nil), metav1.CreateOptions{})
	time.Sleep(200 * time.Millisecond)
	if p := peersNow(); len(p) != 1 {
		t.Fatalf("a node without a pod CIDR joined: %v", p)
	}
	if _, err := os.Stat(confFile); err == nil {
		t.Fatal("conflist written before the node had a pod CIDR")
	}
	api.Nodes().Update(ctx, node("n2", "10.244.2.0/24", "198.18.0.3", nil), metav1.UpdateOptions{})
	waitFor("n2 to join", func() bool { return len(peersNow()) == 2 })
	waitFor("the conflist", func() bool {
		b, _ := os.ReadFile(confFile)
		return bytes.Contains(b, []byte(`"subnet":"10.244.2.0/24"`)) && bytes.Contains(b, []byte(`"nodeName":"n2"`))
	})
	api.Nodes().Delete(ctx, "n1", metav1.DeleteOptions{})
	waitFor("n1 to leave", func() bool { p := peersNow(); return len(p) == 1 && p[0].NodeName == "n2" })

	api.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev", Labels: map[string]string{LabelTenant: "blue"}}}, metav1.CreateOptions{})
	waitFor("the mapping", func() bool {
		b, _ := os.ReadFile(s.MappingFile)
		var m map[string]string
		json.Unmarshal(b, &m)
		return m["dev"] == "blue"
	})
	// A heartbeat-like update that changes nothing berth uses rewrites
	// nothing.
	s.mu.Lock()
	before := s.Writes
	s.mu.Unlock()
	n2 := node("n2", "10.244.2.0/24", "198.18.0.3", nil)
	n2.Labels = map[string]string{"heartbeat": "1"}
	api.Nodes().Update(ctx, n2, metav1.UpdateOptions{})
	time.Sleep(300 * time.Millisecond)
	s.mu.Lock()
	after := s.Writes
	s.mu.Unlock()
	if after != before {
		t.Errorf("an irrelevant node update rewrote the files (%d → %d writes)", before, after)
	}
}

// TestSyncerConfOrder checks that conflists are written in file-name order
// and that one failing to render keeps every later one off the disk: the
// runtime's default network is the first file, so a macvlan conflist alone
// would become every pod's network.
func TestSyncerConfOrder(t *testing.T) {
	good := `{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"berth","ipam":{"subnet":"{{.PodCIDR}}"}}]}`
	macvlan := `{"cniVersion":"1.1.0","name":"m","plugins":[{"type":"berth","ipam":{"rangeStart":"198.19.{{.PodCIDRThirdOctet}}.1"}}]}`
	for _, tc := range []struct {
		name      string
		cidr      string
		first     string // template of 10-first.conflist
		written   []string
		unwritten []string
	}{
		{"both", "10.244.3.0/24", good, []string{"10-first.conflist", "20-second.conflist"}, nil},
		{"first fails, second held back", "10.244.3.0/24", `{"x":"{{.Nope}}"}`, nil, []string{"10-first.conflist", "20-second.conflist"}},
		{"second fails alone", "10.244.3.64/26", good, []string{"10-first.conflist"}, []string{"20-second.conflist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &Syncer{Client: fake.NewClientset(node("n1", tc.cidr, "198.18.0.2", nil)), PeersFile: filepath.Join(dir, "peers.json"),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeName: "n1",
				// Listed out of order on purpose.
				Confs: []Conf{{Template: macvlan, File: filepath.Join(dir, "20-second.conflist")}, {Template: tc.first, File: filepath.Join(dir, "10-first.conflist")}}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := s.Run(ctx); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.written {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s not written: %v", f, err)
				}
			}
			for _, f := range tc.unwritten {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s written", f)
				}
			}
		})
	}
}
