package cri

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"100", 100, false},
		{"10M", 10_000_000, false},
		{"1.5G", 1_500_000_000, false},
		{"1Mi", 1 << 20, false},
		{"2k", 2000, false},
		{" 3M ", 3_000_000, false},
		{"", 0, true},
		{"M", 0, true},
		{"abc", 0, true},
		{"-5M", 0, true},
	} {
		got, err := parseQuantity(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseQuantity(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPodBandwidth(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want *cniBandwidth
		err  bool
	}{
		{"none", nil, nil, false},
		{"ingress only", map[string]string{"kubernetes.io/ingress-bandwidth": "10M"},
			&cniBandwidth{IngressRate: 10_000_000, IngressBurst: 8 * 1514 * 8}, false},
		{"both, big rate burst is 4ms", map[string]string{"kubernetes.io/ingress-bandwidth": "1G", "kubernetes.io/egress-bandwidth": "1G"},
			&cniBandwidth{IngressRate: 1e9, IngressBurst: 4e6, EgressRate: 1e9, EgressBurst: 4e6}, false},
		{"bad value", map[string]string{"kubernetes.io/egress-bandwidth": "fast"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := podBandwidth(tc.ann)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want err=%v", err, tc.err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	got := resolvConf(&runtime.DNSConfig{Servers: []string{"10.0.0.10", "10.0.0.11"},
		Searches: []string{"ns.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}})
	want := "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := resolvConf(&runtime.DNSConfig{}); got != "" {
		t.Fatalf("empty config gave %q", got)
	}
}

func TestTenantOf(t *testing.T) {
	cfg := &runtime.PodSandboxConfig{Labels: map[string]string{"berth.dev/tenant": "blue"},
		Annotations: map[string]string{"berth.dev/tenant": "red"}}
	if got := tenantOf(cfg, "berth.dev/tenant"); got != "blue" {
		t.Fatalf("label should win, got %q", got)
	}
	cfg.Labels = nil
	if got := tenantOf(cfg, "berth.dev/tenant"); got != "red" {
		t.Fatalf("annotation fallback, got %q", got)
	}
	if got := tenantOf(cfg, ""); got != "" {
		t.Fatalf("disabled key gave %q", got)
	}
}

// A retry that arrives while the first call runs joins it: fn runs once and
// both callers get the same ID, even when the first caller gives up.
func TestInflightJoinsRetry(t *testing.T) {
	f := newInflight()
	var runs atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (string, error) {
		runs.Add(1)
		<-release
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "id-1", nil
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() { _, err := f.do(ctx1, "k", fn); errCh <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel1() // kubelet's deadline passes
	if err := <-errCh; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller err = %v, want canceled", err)
	}
	var wg sync.WaitGroup
	ids := make([]string, 3)
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids[i], _ = f.do(context.Background(), "k", fn)
		}(i)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", runs.Load())
	}
	for _, id := range ids {
		if id != "id-1" {
			t.Fatalf("retry got %q, want id-1", id)
		}
	}
}

func TestStorePrefixLookup(t *testing.T) {
	s := newStore[int]()
	s.add("abc123", 1)
	s.add("abd456", 2)
	for _, tc := range []struct {
		id   string
		want int
		ok   bool
	}{{"abc123", 1, true}, {"abc", 1, true}, {"ab", 0, false}, {"", 0, false}, {"zzz", 0, false}} {
		got, ok := s.get(tc.id)
		if ok != tc.ok || got != tc.want {
			t.Errorf("get(%q) = %d,%v want %d,%v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
}

func TestConfigLoadAndValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("socket = \"/tmp/x.sock\"\ncni_bin_dirs = [\"/a\", \"/b\"]\nstream_idle_timeout = \"30m\"\n"), 0o644)
	cfg, err := LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/tmp/x.sock" || len(cfg.CNIBinDirs) != 2 || time.Duration(cfg.StreamIdleTimeout) != 30*time.Minute {
		t.Fatalf("unexpected config %+v", cfg)
	}
	if cfg.PauseImage != DefaultConfig().PauseImage {
		t.Fatalf("default not kept: %q", cfg.PauseImage)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.toml")
	os.WriteFile(typo, []byte("sokcet = \"/tmp/x.sock\"\n"), 0o644)
	if _, err := LoadConfig(typo); err == nil || !strings.Contains(err.Error(), "sokcet") {
		t.Fatalf("unknown key not reported: %v", err)
	}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.CgroupDriver = "cgroupv3" }, "cgroup_driver"},
		{func(c *Config) { c.RootDir = "relative" }, "root_dir"},
		{func(c *Config) { c.Socket = "" }, "socket must not be empty"},
		{func(c *Config) { c.CNIBinDirs = nil }, "cni_bin_dirs"},
		{func(c *Config) { c.LogLevel = "loud" }, "log_level"},
	} {
		c := DefaultConfig()
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want mention of %q", err, tc.want)
		}
	}
}

// procStartTime reads this test process's start: before now, and not long
// before (the test binary started moments ago).
func TestProcStartTime(t *testing.T) {
	st, err := procStartTime(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(st); age < 0 || age > 10*time.Minute {
		t.Fatalf("start time %s is %s ago", st, age)
	}
}

// TestNetworkSelection loads several conflists and picks one per pod by
// the berth.dev/network annotation; the first file is the default.
func TestNetworkSelection(t *testing.T) {
	dir := t.TempDir()
	write := func(file, name string) {
		conf := `{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"loopback"}]}`
		if err := os.WriteFile(filepath.Join(dir, file), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-vxlan.conflist", "overlay")
	write("20-macvlan.conflist", "lan")
	write("30-broken.conflist", "x\"") // not JSON: skipped, the others stay usable
	m, err := newCNIManager(Config{CNIConfDir: dir, RootDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		annotation, want string
		ok               bool
	}{
		{"", "overlay", true},
		{"lan", "lan", true},
		{"overlay", "overlay", true},
		{"nope", "", false},
	} {
		sb := &sandbox{Config: &runtime.PodSandboxConfig{Annotations: map[string]string{}}}
		if tc.annotation != "" {
			sb.Config.Annotations[NetworkAnnotation] = tc.annotation
		}
		l, err := m.network(sb)
		if (err == nil) != tc.ok || (err == nil && l.Name != tc.want) {
			t.Errorf("network(%q) = %v, %v; want %q ok=%v", tc.annotation, l, err, tc.want, tc.ok)
		}
	}
}
