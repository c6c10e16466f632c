package main

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berthdev/berth/cni/ipam"
	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/tenant"
	bebpf "github.com/berthdev/berth/ebpf"
	"github.com/berthdev/berth/ebpf/attach"
)

// fakeMaps stands in for the pinned BPF maps.
type fakeMaps struct {
	mu        sync.Mutex
	podNets   map[netip.Prefix]bool
	endpoints map[netip.Addr]uint32
	drops     map[bebpf.DropKey]uint64
	dropsErr  error
	setErr    error
	guards    map[int]uint32 // ifindex -> tenant
}

func newFakeMaps() *fakeMaps {
	return &fakeMaps{podNets: map[netip.Prefix]bool{}, endpoints: map[netip.Addr]uint32{}, guards: map[int]uint32{}}
}

func (f *fakeMaps) AttachVNIGuard(ifindex int, tenant uint32) (attach.Mode, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.guards[ifindex] = tenant
	return attach.ModeTCX, nil
}

func (f *fakeMaps) SetPodNet(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setErr != nil {
		return f.setErr
	}
	f.podNets[p] = true
	return nil
}

func (f *fakeMaps) ClearPodNetsExcept(keep []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.podNets {
		if !slices.Contains(keep, p) {
			delete(f.podNets, p)
		}
	}
	return nil
}

func (f *fakeMaps) DropCounts() (map[bebpf.DropKey]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.drops), f.dropsErr
}

func (f *fakeMaps) ListEndpoints() (map[netip.Addr]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.endpoints), nil
}

func (f *fakeMaps) DeleteEndpoint(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.endpoints, a)
	return nil
}

func (f *fakeMaps) Close() {}

func (f *fakeMaps) podNetList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.podNets {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func (f *fakeMaps) endpointList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.endpoints {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testDataplane returns a dataplane on fake maps.
func testDataplane(t *testing.T, fm *fakeMaps, network, ipamDir string) (*dataplane, *metrics) {
	t.Helper()
	m := newMetrics()
	dp := newDataplane(options{bpfPinDir: "/fake", network: network, ipamDataDir: ipamDir}, discard(), m)
	dp.open = func(string) (bpfMaps, error) { return fm, nil }
	return dp, m
}

func peer(name, cidr string) overlay.Peer {
	return overlay.Peer{NodeName: name, UnderlayIP: "198.18.0.1", PodCIDR: cidr}
}

func TestSyncPodNets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		before  []string
		peers   []overlay.Peer
		podCIDR string
		want    []string
	}{
		{name: "all peers", peers: []overlay.Peer{peer("n1", "198.18.64.0/24"), peer("n2", "198.18.65.0/24")},
			podCIDR: "198.18.64.0/24", want: []string{"198.18.64.0/24", "198.18.65.0/24"}},
		{name: "explicit own pod CIDR not in the file", peers: []overlay.Peer{peer("n2", "198.18.65.0/24")},
			podCIDR: "198.18.80.0/24", want: []string{"198.18.65.0/24", "198.18.80.0/24"}},
		{name: "stale ones go", before: []string{"198.18.66.0/24", "198.18.65.0/24"},
			peers: []overlay.Peer{peer("n2", "198.18.65.0/24")}, want: []string{"198.18.65.0/24"}},
		{name: "IPv6", peers: []overlay.Peer{peer("n1", "fd00:64::/64")}, want: []string{"fd00:64::/64"}},
		{name: "no peers, nothing", before: []string{"198.18.66.0/24"}, peers: []overlay.Peer{}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := newFakeMaps()
			for _, p := range tc.before {
				fm.podNets[netip.MustParsePrefix(p)] = true
			}
			dp, _ := testDataplane(t, fm, "", "")
			r := overlay.Result{Peers: tc.peers}
			if tc.podCIDR != "" {
				r.PodCIDR = netip.MustParsePrefix(tc.podCIDR)
			}
			if err := dp.syncPodNets(fm, r); err != nil {
				t.Fatal(err)
			}
			if got := fm.podNetList(); !slices.Equal(got, tc.want) {
				t.Errorf("pod nets = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDataplaneUnavailable: BPF that cannot be opened or programmed is
// reported by the gauge and retried, never fatal.
func TestDataplaneUnavailable(t *testing.T) {
	fm := newFakeMaps()
	dp, m := testDataplane(t, fm, "", "")
	opens := 0
	dp.open = func(string) (bpfMaps, error) {
		opens++
		if opens == 1 {
			return nil, errors.New("no bpffs")
		}
		return fm, nil
	}
	r := overlay.Result{Trigger: overlay.TriggerStart, Peers: []overlay.Peer{peer("n1", "198.18.64.0/24")}}
	gauge := func() string {
		_, body := get(t, m.handler(), "/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "berth_netd_bpf_available ") {
				return l
			}
		}
		return "missing"
	}
	dp.sync(r)
	if g := gauge(); g != "berth_netd_bpf_available 0" || dp.currentMaps() != nil {
		t.Fatalf("after a failed open: %s, maps %v", g, dp.currentMaps())
	}
	dp.sync(r)
	if g := gauge(); g != "berth_netd_bpf_available 1" || opens != 2 {
		t.Fatalf("after a successful open: %s after %d opens", g, opens)
	}
	fm.setErr = errors.New("map full")
	dp.sync(r)
	if g := gauge(); g != "berth_netd_bpf_available 0" {
		t.Fatalf("after a failed update: %s", g)
	}
	// Skipped reconciles (no peers file yet) and a disabled pin dir do
	// nothing at all.
	fm.setErr = nil
	dp.sync(overlay.Result{Skipped: true})
	dp.pinDir = ""
	dp.sync(r)
	if g := gauge(); g != "berth_netd_bpf_available 0" || opens != 2 {
		t.Fatalf("skipped/disabled syncs changed state: %s, %d opens", g, opens)
	}
}

func TestGCEndpoints(t *testing.T) {
	const network = "berthnet"
	cidr := netip.MustParsePrefix("198.18.64.0/24")
	type env struct {
		fm    *fakeMaps
		dir   string
		alloc func(first string) netip.Addr // allocates exactly first
		free  func(a netip.Addr)
	}
	newEnv := func(t *testing.T) *env {
		e := &env{fm: newFakeMaps(), dir: t.TempDir()}
		atts := map[netip.Addr]ipam.Attachment{}
		e.alloc = func(addr string) netip.Addr {
			t.Helper()
			a, err := ipam.New(network, &ipam.Config{Subnet: cidr.String(), RangeStart: addr, RangeEnd: addr, DataDir: e.dir})
			if err != nil {
				t.Fatal(err)
			}
			att := ipam.Attachment{ContainerID: "c-" + addr, IfName: "eth0"}
			p, _, err := a.Allocate(att)
			if err != nil {
				t.Fatal(err)
			}
			atts[p.Addr()] = att
			return p.Addr()
		}
		e.free = func(addr netip.Addr) {
			t.Helper()
			a, err := ipam.New(network, &ipam.Config{Subnet: cidr.String(), DataDir: e.dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Release(atts[addr]); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	ep := func(e *env, addr string, tenant uint32) { e.fm.endpoints[netip.MustParseAddr(addr)] = tenant }

	type pass struct {
		before      func(e *env)
		wantRemoved int
		wantLeft    []string
	}
	for _, tc := range []struct {
		name    string
		setup   func(e *env)
		podCIDR netip.Prefix
		passes  []pass
	}{
		{
			name: "stale endpoint goes on the second pass, the rest stays",
			setup: func(e *env) {
				e.alloc("198.18.64.10")
				ep(e, "198.18.64.10", 2) // allocated
				ep(e, "198.18.64.11", 2) // stale
				ep(e, "198.18.65.11", 2) // another node's pod CIDR
				ep(e, "10.0.0.1", 1)     // not a pod CIDR at all
			},
			podCIDR: cidr,
			passes: []pass{
				{wantRemoved: 0, wantLeft: []string{"10.0.0.1", "198.18.64.10", "198.18.64.11", "198.18.65.11"}},
				{wantRemoved: 1, wantLeft: []string{"10.0.0.1", "198.18.64.10", "198.18.65.11"}},
				{wantRemoved: 0, wantLeft: []string{"10.0.0.1", "198.18.64.10", "198.18.65.11"}},
			},
		},
		{
			name: "a DEL that released the address but crashed before the endpoint",
			setup: func(e *env) {
				a := e.alloc("198.18.64.20")
				ep(e, a.String(), 3)
				e.free(a)
			},
			podCIDR: cidr,
			passes:  []pass{{wantRemoved: 0}, {wantRemoved: 1}},
		},
		{
			name: "re-registered for another tenant between passes: not the same stale entry",
			setup: func(e *env) {
				e.alloc("198.18.64.10")
				ep(e, "198.18.64.30", 2)
			},
			podCIDR: cidr,
			passes: []pass{
				{wantRemoved: 0, wantLeft: []string{"198.18.64.30"}},
				{before: func(e *env) { ep(e, "198.18.64.30", 4) }, wantRemoved: 0, wantLeft: []string{"198.18.64.30"}},
				{wantRemoved: 1, wantLeft: nil},
			},
		},
		{
			name: "allocated between passes (an ADD in flight): kept",
			setup: func(e *env) {
				e.alloc("198.18.64.10")
				ep(e, "198.18.64.40", 2)
			},
			podCIDR: cidr,
			passes: []pass{
				{wantRemoved: 0, wantLeft: []string{"198.18.64.40"}},
				{before: func(e *env) { e.alloc("198.18.64.40") }, wantRemoved: 0, wantLeft: []string{"198.18.64.40"}},
				{wantRemoved: 0, wantLeft: []string{"198.18.64.40"}},
			},
		},
		{
			name: "no IPAM store for the network: nothing is judged stale",
			setup: func(e *env) {
				ep(e, "198.18.64.11", 2)
			},
			podCIDR: cidr,
			passes:  []pass{{wantLeft: []string{"198.18.64.11"}}, {wantLeft: []string{"198.18.64.11"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			dp, _ := testDataplane(t, e.fm, network, e.dir)
			for i, p := range tc.passes {
				if p.before != nil {
					p.before(e)
				}
				removed, err := dp.gcEndpoints(e.fm, tc.podCIDR)
				if err != nil {
					t.Fatalf("pass %d: %v", i, err)
				}
				if removed != p.wantRemoved {
					t.Errorf("pass %d removed %d, want %d", i, removed, p.wantRemoved)
				}
				if p.wantLeft != nil || p.wantRemoved > 0 {
					if got := e.fm.endpointList(); !slices.Equal(got, p.wantLeft) {
						t.Errorf("pass %d left %v, want %v", i, got, p.wantLeft)
					}
				}
			}
		})
	}

	t.Run("unknown pod CIDR is an error", func(t *testing.T) {
		e := newEnv(t)
		dp, _ := testDataplane(t, e.fm, network, e.dir)
		if _, err := dp.gcEndpoints(e.fm, netip.Prefix{}); err == nil {
			t.Fatal("no error without a pod CIDR")
		}
	})
}

// TestGCRunsOnTimerOnly: file-triggered reconciles come in bursts, so only
// start and resync passes count towards the two-pass rule; and the metric
// counts the removals.
func TestGCRunsOnTimerOnly(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	fm := newFakeMaps()
	fm.endpoints[netip.MustParseAddr("198.18.64.9")] = 2
	dp, m := testDataplane(t, fm, "net", dir)
	r := overlay.Result{PodCIDR: netip.MustParsePrefix("198.18.64.0/24")}
	for _, trig := range []overlay.Trigger{overlay.TriggerStart, overlay.TriggerFile, overlay.TriggerFile} {
		r.Trigger = trig
		dp.sync(r)
	}
	if len(fm.endpointList()) != 1 {
		t.Fatal("file-triggered reconciles removed the endpoint")
	}
	r.Trigger = overlay.TriggerResync
	dp.sync(r)
	if len(fm.endpointList()) != 0 {
		t.Fatal("the resync after the start pass did not remove the endpoint")
	}
	if _, body := get(t, m.handler(), "/metrics"); !strings.Contains(body, "berth_netd_stale_endpoints_removed_total 1") {
		t.Errorf("/metrics lacks the removal:\n%s", body)
	}
}

func TestDropsCollector(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "tenants.json")
	if _, err := (tenant.Registry{Path: reg}).Index("team-a"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		maps     bpfMaps
		registry string
		want     []string
		wantCode int
	}{
		{
			name: "named tenants, unknown ids as numbers",
			maps: &fakeMaps{drops: map[bebpf.DropKey]uint64{
				{Tenant: 1, Reason: bebpf.DropTenant}: 5,
				{Tenant: 2, Reason: bebpf.DropVNI}:    7,
				{Tenant: 2, Reason: bebpf.DropSpoof}:  1,
				{Tenant: 9, Reason: bebpf.DropTenant}: 3,
			}},
			registry: reg,
			want: []string{
				`berth_tenant_dropped_packets_total{reason="cross_tenant",tenant="default"} 5`,
				`berth_tenant_dropped_packets_total{reason="foreign_vni",tenant="team-a"} 7`,
				`berth_tenant_dropped_packets_total{reason="spoofed_source",tenant="team-a"} 1`,
				`berth_tenant_dropped_packets_total{reason="cross_tenant",tenant="9"} 3`,
			},
			wantCode: http.StatusOK,
		},
		{
			name:     "no registry: only the default tenant has a name",
			maps:     &fakeMaps{drops: map[bebpf.DropKey]uint64{{Tenant: 1, Reason: 1}: 1, {Tenant: 2, Reason: 1}: 2}},
			want:     []string{`{reason="cross_tenant",tenant="default"} 1`, `{reason="cross_tenant",tenant="2"} 2`},
			wantCode: http.StatusOK,
		},
		{
			name:     "no BPF: no series, no error",
			wantCode: http.StatusOK,
		},
		{
			name:     "unreadable map fails the scrape",
			maps:     &fakeMaps{dropsErr: errors.New("EPERM")},
			want:     []string{"EPERM"},
			wantCode: http.StatusInternalServerError,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics()
			if err := m.register(newDropsCollector(func() bpfMaps { return tc.maps }, tc.registry, discard())); err != nil {
				t.Fatal(err)
			}
			code, body := get(t, m.handler(), "/metrics")
			if code != tc.wantCode {
				t.Errorf("/metrics = %d, want %d", code, tc.wantCode)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("/metrics lacks %q", w)
				}
			}
			if len(tc.want) == 0 && strings.Contains(body, "berth_tenant_dropped_packets_total{") {
				t.Errorf("/metrics has drop series without maps")
			}
			if t.Failed() {
				t.Logf("/metrics:\n%s", body)
			}
		})
	}
}
