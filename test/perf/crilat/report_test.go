package crilat

import (
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// pods makes n fully successful samples with start = base+i ms and
// stop + remove = 2*(base+i) ms.
func pods(n int, base float64) []PodSample {
	out := make([]PodSample, n)
	for i := range out {
		v := base + float64(i)
		out[i] = PodSample{Index: i, SandboxID: "sb", RunPodSandbox: v * 0.6, CreateContainer: v * 0.1, StartContainer: v * 0.3,
			Start: v, StopPodSandbox: v * 1.5, RemovePodSandbox: v * 0.5, StopRemove: 2 * v}
	}
	return out
}

func TestComputeStats(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		pods                 []PodSample
		op                   string
		n, failed            int
		p50, p99, lo, hi     float64
		wantNaN              bool
		wantP25, wantP75, mu float64
	}{
		{name: "1..100 start", pods: pods(100, 1), op: OpStart, n: 100, p50: 50, p99: 99, lo: 1, hi: 100, wantP25: 25, wantP75: 75, mu: 50.5},
		{name: "50 pods: p99 is the slowest", pods: pods(50, 1), op: OpStart, n: 50, p50: 25, p99: 50, lo: 1, hi: 50, wantP25: 13, wantP75: 38, mu: 25.5},
		{name: "stop+remove", pods: pods(10, 1), op: OpStopRemove, n: 10, p50: 10, p99: 20, lo: 2, hi: 20, wantP25: 6, wantP75: 16, mu: 11},
		{name: "failed start is out of every op", pods: func() []PodSample {
			p := pods(4, 1)
			p[3].StartErr = "RunPodSandbox: boom"
			return p
		}(), op: OpStopRemove, n: 3, failed: 1, p50: 4, p99: 6, lo: 2, hi: 6, wantP25: 2, wantP75: 6, mu: 4},
		{name: "failed stop is out of stop ops only", pods: func() []PodSample {
			p := pods(4, 1)
			p[0].StopErr = "StopPodSandbox: boom"
			return p
		}(), op: OpStart, n: 4, p50: 2, p99: 4, lo: 1, hi: 4, wantP25: 1, wantP75: 3, mu: 2.5},
		{name: "no samples", pods: nil, op: OpStart, wantNaN: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ComputeStats(tc.pods)[tc.op]
			if s.N != tc.n || s.Failed != tc.failed {
				t.Fatalf("n=%d failed=%d, want %d %d", s.N, s.Failed, tc.n, tc.failed)
			}
			if tc.wantNaN {
				if !math.IsNaN(s.P50) || !math.IsNaN(s.P99) || !math.IsNaN(s.Mean) {
					t.Errorf("empty stat should be NaN: %+v", s)
				}
				return
			}
			for _, c := range []struct {
				what      string
				got, want float64
			}{{"p50", s.P50, tc.p50}, {"p99", s.P99, tc.p99}, {"min", s.Min, tc.lo}, {"max", s.Max, tc.hi},
				{"p25", s.P25, tc.wantP25}, {"p75", s.P75, tc.wantP75}, {"mean", s.Mean, tc.mu}} {
				if math.Abs(c.got-c.want) > 1e-9 {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
	// The stop ops see the stop failure.
	p := pods(4, 1)
	p[0].StopErr = "x"
	if s := ComputeStats(p)[OpStopPodSandbox]; s.N != 3 || s.Failed != 1 {
		t.Errorf("StopPodSandbox: %+v", s)
	}
}

// sampleReport has both runtimes with the given start-latency offsets and
// memory growths.
func sampleReport(berthBase, refBase float64, berthGrowthKiB, refGrowthKiB int64) *Report {
	mk := func(name string, base float64, growth int64) *Runtime {
		m := &Memory{Pods: 100, Process: name,
			Fresh:     MemReading{VmRSSKiB: 30000},
			Baseline:  MemReading{VmRSSKiB: 40000, RssAnonKiB: 20000, RssFileKiB: 20000},
			Loaded:    MemReading{VmRSSKiB: 40000 + growth, RssAnonKiB: 20000 + growth, RssFileKiB: 20000, SamplesKiB: []int64{40000 + growth - 10, 40000 + growth, 40000 + growth + 10}},
			ShimCount: 100, ShimRSSKiB: 100 * 9000, ShimPSSKiB: 100 * 2000}
		if name == Berth {
			m.Containerd = &ProcMem{Baseline: MemReading{VmRSSKiB: 50000}, Loaded: MemReading{VmRSSKiB: 60000}}
		}
		return &Runtime{Name: name, Description: name + " desc", Version: "v",
			Phases: []*Phase{
				{Name: PhaseSequential, Concurrency: 1, Pods: pods(50, base), StartWallMs: 1000, StopWallMs: 2000},
				{Name: PhaseParallel, Concurrency: 10, Pods: pods(50, base*2), StartWallMs: 500, StopWallMs: 700},
			},
			Memory: m}
	}
	return &Report{Mode: "full", Params: Params{Pods: 50, Concurrency: 10, RSSPods: 100, Image: busybox, Command: command,
		SandboxImage: "pause", SettleSeconds: 10, RSSSamples: 3},
		Env:       Env{Host: perfnet.Host{Date: "2026-01-01T00:00:00Z", Kernel: "6.1", CPUs: 2}, DurationSeconds: 125},
		Runtimes:  []*Runtime{mk(Berth, berthBase, berthGrowthKiB), mk(Reference, refBase, refGrowthKiB)},
		Reproduce: []string{"hack/perf-cri.sh"}}
}

func TestRatios(t *testing.T) {
	for _, tc := range []struct {
		name              string
		berth, ref        float64
		bGrowth, rGrowth  int64
		wantStart         string // result of "sequential start p50"
		wantStartValue    float64
		wantMem           string
		wantMemValue      float64
		skipBerth, noLoad bool
	}{
		{name: "berth faster, less memory", berth: 100, ref: 200, bGrowth: 1024, rGrowth: 4096,
			wantStart: "target met", wantStartValue: 124.0 / 224, wantMem: "target met", wantMemValue: 0.25},
		{name: "berth slower, more memory", berth: 300, ref: 200, bGrowth: 8192, rGrowth: 4096,
			wantStart: "target missed", wantStartValue: 324.0 / 224, wantMem: "target missed", wantMemValue: 2},
		{name: "equal is met", berth: 200, ref: 200, bGrowth: 4096, rGrowth: 4096,
			wantStart: "target met", wantStartValue: 1, wantMem: "target met", wantMemValue: 1},
		{name: "reference growth lost in noise", berth: 200, ref: 200, bGrowth: 4096, rGrowth: -100,
			wantStart: "target met", wantStartValue: 1, wantMem: "n/a", wantMemValue: math.NaN()},
		{name: "berth not measured", berth: 200, ref: 200, skipBerth: true,
			wantStart: "n/a", wantStartValue: math.NaN(), wantMem: "n/a", wantMemValue: math.NaN()},
		{name: "memory not read", berth: 200, ref: 200, noLoad: true,
			wantStart: "target met", wantStartValue: 1, wantMem: "n/a", wantMemValue: math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleReport(tc.berth, tc.ref, tc.bGrowth, tc.rGrowth)
			if tc.skipBerth {
				r.Runtimes[0].Skipped = "does not build"
				r.Runtimes[0].Phases, r.Runtimes[0].Memory = nil, nil
			}
			if tc.noLoad {
				r.Runtimes[1].Memory.Loaded = MemReading{}
			}
			r.Finalize()
			r.Finalize() // idempotent
			if len(r.Ratios) != 9 {
				t.Fatalf("%d ratios, want 8 latency + 1 memory", len(r.Ratios))
			}
			got := map[string]Ratio{}
			for _, x := range r.Ratios {
				got[x.Name] = x
			}
			st := got["sequential start p50"]
			if st.Result != tc.wantStart || !sameFloat(st.Value, tc.wantStartValue) {
				t.Errorf("start p50: %s %v, want %s %v", st.Result, st.Value, tc.wantStart, tc.wantStartValue)
			}
			mem := r.Ratios[len(r.Ratios)-1]
			if mem.Result != tc.wantMem || !sameFloat(mem.Value, tc.wantMemValue) {
				t.Errorf("memory: %s %v, want %s %v (%+v)", mem.Result, mem.Value, tc.wantMem, tc.wantMemValue, mem)
			}
			if p99 := got["sequential start p99"]; !tc.skipBerth && !strings.Contains(p99.Noise, "slowest") {
				t.Errorf("p99 of 50 pods should be flagged as one sample: %q", p99.Noise)
			}
		})
	}
}

func sameFloat(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) < 1e-9
}

func TestIQRNoise(t *testing.T) {
	for _, tc := range []struct {
		b, c Stat
		want string
	}{
		{Stat{P25: 1, P75: 3}, Stat{P25: 2, P75: 4}, "within noise"},
		{Stat{P25: 1, P75: 2}, Stat{P25: 3, P75: 4}, "clear"},
		{Stat{P25: 5, P75: 6}, Stat{P25: 3, P75: 4}, "clear"},
		{Stat{P25: 1, P75: 2}, Stat{P25: 2, P75: 3}, "within noise"},
	} {
		if got := iqrNoise(tc.b, tc.c); !strings.HasPrefix(got, tc.want) {
			t.Errorf("iqrNoise(%v, %v) = %q, want %q...", tc.b, tc.c, got, tc.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     MemReading
		err      bool
	}{
		{name: "full", in: "Name:\tcontainerd\nVmPeak:\t 2000 kB\nVmRSS:\t   51200 kB\nRssAnon:\t   30000 kB\nRssFile:\t   21200 kB\nRssShmem:\t 0 kB\n",
			want: MemReading{VmRSSKiB: 51200, RssAnonKiB: 30000, RssFileKiB: 21200}},
		{name: "no split", in: "VmRSS:\t 100 kB\n", want: MemReading{VmRSSKiB: 100}},
		{name: "kernel thread has no VmRSS", in: "Name:\tkworker\nState:\tI (idle)\n", err: true},
		{name: "garbage", in: "VmRSS: lots\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatus(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && (got.VmRSSKiB != tc.want.VmRSSKiB || got.RssAnonKiB != tc.want.RssAnonKiB || got.RssFileKiB != tc.want.RssFileKiB) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// Our own process has a VmRSS.
	if m, err := ReadMem(os.Getpid()); err != nil || m.VmRSSKiB <= 0 {
		t.Errorf("ReadMem(self) = %+v, %v", m, err)
	}
}

func TestParsePss(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"55d0c0000000-7ffc0000000 ---p 00000000 00:00 0 [rollup]\nRss:  9000 kB\nPss:  2100 kB\nPss_Dirty: 1000 kB\n", 2100, true},
		{"Rss: 9000 kB\n", 0, false},
		{"Pss:\n", 0, false},
	} {
		got, ok := ParsePss(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParsePss(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMedianReading(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want int64
	}{{[]int64{5, 1, 3}, 3}, {[]int64{4, 1, 3, 2}, 2}, {[]int64{7}, 7}, {nil, 0}} {
		var rs []MemReading
		for _, v := range tc.in {
			rs = append(rs, MemReading{VmRSSKiB: v, RssAnonKiB: v * 10})
		}
		got := MedianReading(rs)
		if got.VmRSSKiB != tc.want || got.RssAnonKiB != tc.want*10 || len(got.SamplesKiB) != len(tc.in) {
			t.Errorf("MedianReading(%v) = %+v, want VmRSS %d with its own split", tc.in, got, tc.want)
		}
	}
}

func TestIsShimOf(t *testing.T) {
	addr := "/run/bti-ctd-123/c.sock"
	for _, tc := range []struct {
		name string
		args []string
		want bool
	}{
		{"ours", []string{"/opt/berth/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", addr}, true},
		{"double dash", []string{"containerd-shim-runc-v2", "--address", addr}, true},
		{"another containerd's", []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-address", "/run/containerd/containerd.sock"}, false},
		{"containerd itself", []string{"/opt/berth/bin/containerd", "--config", "/run/bti-ctd-123/config.toml"}, false},
		{"address as last word", []string{"containerd-shim-runc-v2", "-address"}, false},
		{"empty", nil, false},
	} {
		if got := IsShimOf(tc.args, addr); got != tc.want {
			t.Errorf("%s: IsShimOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestOutputs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     *Report
		wants []string
	}{
		{name: "both measured", r: sampleReport(100, 200, 1024, 4096), wants: []string{
			"sequential start p50", "target met", "RSS growth with 100 pods running", "berth-cri's containerd (no CRI)",
			"hack/perf-cri.sh", "2m05s", "100 shims: Σ VmRSS 878.9 MiB, Σ PSS 195.3 MiB", "Whole stack with 100 pods",
			"Sum of each runtime's own pod times", "Wall time for all pods"}},
		{name: "berth missed", r: sampleReport(300, 200, 8192, 4096), wants: []string{"**target missed**"}},
		{name: "berth skipped", r: func() *Report {
			r := sampleReport(100, 200, 1024, 4096)
			r.Runtimes[0].Skipped = "does not build"
			r.Runtimes[0].Phases, r.Runtimes[0].Memory = nil, nil
			return r
		}(), wants: []string{"**not measured**: does not build", "n/a"}},
		{name: "errors listed", r: func() *Report {
			r := sampleReport(100, 200, 1024, 4096)
			r.Runtimes[0].Errors = []string{"sequential crilat-seq-001: RunPodSandbox: `boom`"}
			r.Runtimes[0].Logs = []LogScan{{Source: "berth-cri", Warnings: 3, Findings: []LogFinding{{Level: "warn", Count: 3, Message: "CRI request failed: x", Example: "{raw line}"}}}}
			r.Runtimes[1].Logs = []LogScan{{Source: "containerd"}}
			r.Runtimes[0].Phases[0].Pods[1].StartErr = "RunPodSandbox: boom"
			return r
		}(), wants: []string{"## Errors", "RunPodSandbox: 'boom'", "49 (1)", "## Warnings and errors in the logs",
			"| berth-cri | berth-cri | 3 warnings, 0 errors | 3 × warn | `CRI request failed: x` |", "| containerd | containerd | 0 warnings, 0 errors |  |  |", "verbatim:\n\n```\n{raw line}\n```"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.Finalize()
			dir := t.TempDir()
			if err := WriteOutputs(dir, tc.r); err != nil {
				t.Fatal(err)
			}
			md, err := os.ReadFile(filepath.Join(dir, "cri.md"))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(string(md), w) {
					t.Errorf("cri.md lacks %q:\n%s", w, md)
				}
			}
			for _, svg := range []string{"cri-start.svg", "cri-stop.svg", "cri-rpc.svg", "cri-rss.svg"} {
				b, err := os.ReadFile(filepath.Join(dir, svg))
				if err != nil {
					t.Fatal(err)
				}
				if err := xml.Unmarshal(b, new(struct{})); err != nil {
					t.Errorf("%s is not well-formed: %v", svg, err)
				}
				if strings.Contains(string(b), "NaN") {
					t.Errorf("%s prints NaN", svg)
				}
			}
			// cri.json round-trips, NaN as null, and renders the same.
			back, err := ReadReport(filepath.Join(dir, "cri.json"))
			if err != nil {
				t.Fatal(err)
			}
			back.Finalize()
			if got := Markdown(back); got != string(md) {
				t.Errorf("re-rendered cri.md differs from the original")
			}
			var raw map[string]any
			b, _ := os.ReadFile(filepath.Join(dir, "cri.json"))
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			if len(raw["ratios"].([]any)) != 9 {
				t.Errorf("cri.json ratios: %v", raw["ratios"])
			}
			if _, err := os.Stat(filepath.Join(dir, ".cri.json.tmp")); err == nil {
				t.Error("temporary file left behind")
			}
		})
	}
}

func TestScanLog(t *testing.T) {
	for _, tc := range []struct {
		name          string
		log           string
		warns, errors int
		want          []LogFinding
	}{
		{name: "berth-cri JSON", log: `{"time":"t","level":"DEBUG","msg":"CRI request","method":"/runtime.v1.RuntimeService/Version","duration":1200}
{"time":"t","level":"WARN","msg":"CRI request failed","method":"/x","code":"NotFound","err":"sandbox \"a\" not found"}
{"time":"t","level":"INFO","msg":"serving"}
{"time":"t","level":"WARN","msg":"CRI request failed","method":"/x","code":"NotFound","err":"sandbox \"a\" not found"}
{"time":"t","level":"ERROR","msg":"panic in CRI handler"}
not json {
`, warns: 2, errors: 1, want: []LogFinding{
			{Level: "warn", Count: 2, Message: `CRI request failed: sandbox "a" not found`,
				Example: `{"time":"t","level":"WARN","msg":"CRI request failed","method":"/x","code":"NotFound","err":"sandbox \"a\" not found"}`},
			{Level: "error", Count: 1, Message: "panic in CRI handler", Example: `{"time":"t","level":"ERROR","msg":"panic in CRI handler"}`}}},
		{name: "containerd logrus", log: `time="2026-11-26T00:06:12Z" level=info msg="loading plugin" id=io.containerd.x
time="2026-11-26T00:06:12Z" level=warning msg="failed to load plugin" error="no \"btrfs\" here" id=io.containerd.snapshotter.v1.btrfs
time="2026-11-26T00:06:13Z" level=error msg=plain
time="2026-11-26T00:06:13Z" level=warning msg="failed to load plugin" error="no \"btrfs\" here" id=other
time="2026-11-26T00:06:14Z" level=warning msg="warnings while cleaning up dead shim" id=abc warnings="time=\"x\" level=warning msg=\"failed to read init pid file\"\n"
`, warns: 3, errors: 1, want: []LogFinding{
			{Level: "warn", Count: 2, Message: `failed to load plugin: no "btrfs" here`,
				Example: `time="2026-11-26T00:06:12Z" level=warning msg="failed to load plugin" error="no \"btrfs\" here" id=io.containerd.snapshotter.v1.btrfs`},
			{Level: "error", Count: 1, Message: "plain", Example: `time="2026-11-26T00:06:13Z" level=error msg=plain`},
			{Level: "warn", Count: 1, Message: `warnings while cleaning up dead shim: time="x" level=warning msg="failed to read init pid file"`,
				Example: `time="2026-11-26T00:06:14Z" level=warning msg="warnings while cleaning up dead shim" id=abc warnings="time=\"x\" level=warning msg=\"failed to read init pid file\"\n"`}}},
		{name: "quiet", log: "time=x level=info msg=ok\n", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ScanLog("src", tc.log)
			if got.Source != "src" || got.Warnings != tc.warns || got.Errors != tc.errors {
				t.Errorf("got %+v, want %d warnings, %d errors", got, tc.warns, tc.errors)
			}
			if len(got.Findings) != len(tc.want) {
				t.Fatalf("findings %+v, want %+v", got.Findings, tc.want)
			}
			for i := range tc.want {
				if got.Findings[i] != tc.want[i] {
					t.Errorf("finding %d = %+v, want %+v", i, got.Findings[i], tc.want[i])
				}
			}
		})
	}
	// More distinct messages than maxFindings: the total still counts all.
	var b strings.Builder
	for i := range maxFindings + 3 {
		b.WriteString(`{"level":"WARN","msg":"m` + string(rune('a'+i)) + `"}` + "\n")
	}
	if got := ScanLog("s", b.String()); got.Warnings != maxFindings+3 || len(got.Findings) != maxFindings {
		t.Errorf("cap: %d warnings, %d findings", got.Warnings, len(got.Findings))
	}
}
