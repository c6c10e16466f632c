package kindperf

import (
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthdev/berth/test/perf/csifio"
	"github.com/berthdev/berth/test/perf/perfnet"
)

func TestParsePing(t *testing.T) {
	for _, tc := range []struct {
		name           string
		out            string
		rtt            []float64
		sent, received int
	}{
		{"replies and summary", `PING 10.244.1.5 (10.244.1.5) 56(84) bytes of data.
64 bytes from 10.244.1.5: icmp_seq=1 ttl=63 time=0.081 ms
64 bytes from 10.244.1.5: icmp_seq=2 ttl=63 time=12.5 ms
64 bytes from 10.244.1.5: icmp_seq=3 ttl=63 time=3 ms

--- 10.244.1.5 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 301ms
rtt min/avg/max/mdev = 0.081/5.193/12.500/5.2 ms
`, []float64{0.081, 12.5, 3}, 4, 3},
		{"duplicates and errors", `64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=1.00 ms
64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=1.20 ms (DUP!)
From 10.0.0.1 icmp_seq=2 Destination Host Unreachable
--- 10.0.0.2 ping statistics ---
3 packets transmitted, 1 received, +1 duplicates, +1 errors, 66.6667% packet loss, time 2003ms
`, []float64{1}, 3, 1},
		{"cut short, no summary", "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.5 ms\n", []float64{0.5}, 1, 1},
		{"nothing", "", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParsePing(tc.out)
			if !reflect.DeepEqual(got.RTTms, tc.rtt) || got.Sent != tc.sent || got.Received != tc.received {
				t.Errorf("got %+v, want rtt %v sent %d received %d", got, tc.rtt, tc.sent, tc.received)
			}
		})
	}
}

func TestConflistNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"two conflists", `{"cniVersion":"1.1.0","name":"berth","plugins":[{"type":"berth"}]}
{"name": "berth-macvlan", "plugins": []}
`, []string{"berth", "berth-macvlan"}},
		{"stops at garbage", `{"name":"a"} not json {"name":"b"}`, []string{"a"}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ConflistNames([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParamsFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		check   func(Params) bool
		mode    string
		wantErr bool
	}{
		{"default", nil, func(p Params) bool { return p.Repeats == 3 && p.Pods == 30 && len(p.Parts) == 4 }, "full", false},
		{"quick", map[string]string{"KIND_PERF_QUICK": "1"}, func(p Params) bool { return p.Repeats == 1 && p.Fio.FileBytes == 64<<20 }, "quick (smoke)", false},
		{"parts", map[string]string{"KIND_PERF_PARTS": "fio, net,fio"}, func(p Params) bool {
			return reflect.DeepEqual(p.Parts, []string{PartFio, PartNet}) && !p.Has(PartPodStart)
		}, "full, custom", false},
		{"file size sets the PVC", map[string]string{"KIND_PERF_FIO_FILE_MIB": "512"}, func(p Params) bool {
			return p.Fio.FileBytes == 512<<20 && p.PVCBytes == 1<<30
		}, "full, custom", false},
		{"unknown part", map[string]string{"KIND_PERF_PARTS": "net,disk"}, nil, "", true},
		{"out of range", map[string]string{"KIND_PERF_PODS": "1"}, nil, "", true},
		{"not a number", map[string]string{"KIND_PERF_SECONDS": "ten"}, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, mode, err := ParamsFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", p)
				}
				return
			}
			if err != nil || mode != tc.mode || !tc.check(p) {
				t.Errorf("got %+v, %q, %v", p, mode, err)
			}
		})
	}
}

func TestRateMbps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{{"100M", 100}, {"1G", 1000}, {"10M", 10}, {"500k", 0.5}} {
		got, err := RateMbps(tc.in)
		if err != nil || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("RateMbps(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := RateMbps("fast"); err == nil {
		t.Error("RateMbps(fast): want an error")
	}
}

func TestLateMbps(t *testing.T) {
	out := []byte(`{"end":{},"server_output_json":{"intervals":[
		{"sum":{"start":0,"seconds":1,"bytes":125000000}},
		{"sum":{"start":1,"seconds":1,"bytes":12500000}},
		{"sum":{"start":2,"seconds":1,"bytes":12500000}},
		{"sum":{"start":3,"seconds":0.5,"bytes":6250000}}]}}`)
	for _, tc := range []struct {
		from    float64
		want    float64
		wantErr bool
	}{{0, 156.25 * 8 / 3.5, false}, {1, 100, false}, {3, 100, false}, {4, 0, true}} {
		got, err := LateMbps(out, tc.from)
		if (err != nil) != tc.wantErr || math.Abs(got-tc.want) > 0.01 {
			t.Errorf("LateMbps(from %v) = %v, %v; want %v (error %v)", tc.from, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := LateMbps([]byte(`{"end":{}}`), 0); err == nil {
		t.Error("no server output: want an error")
	}
}

func TestMountLine(t *testing.T) {
	mi := `1500 1400 0:52 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/x
1510 1500 0:60 / /mnt/berth-csi rw,nosuid,nodev,relatime - fuse.berth-csi berth-csi rw,user_id=0,group_id=0
1511 1500 254:0 /var/lib/bperf-kind-fio /mnt/hostpath rw,relatime - ext4 /dev/vda rw
`
	for _, tc := range []struct{ point, want string }{
		{"/mnt/berth-csi", "/mnt/berth-csi fuse.berth-csi berth-csi rw,nosuid,nodev,relatime"},
		{"/mnt/hostpath", "/mnt/hostpath ext4 /dev/vda rw,relatime"},
		{"/mnt/none", ""},
	} {
		if got := mountLine(mi, tc.point); got != tc.want {
			t.Errorf("mountLine(%s) = %q, want %q", tc.point, got, tc.want)
		}
	}
}

// sample builds a report with every part measured, as a run would.
func sample() *Report {
	p := DefaultParams()
	p.Repeats, p.Fio.Repeats, p.Pods = 2, 1, 3
	r := &Report{Mode: "full", Params: p, Reproduce: []string{"sudo hack/perf-kind.sh"},
		Env: Env{Host: perfnet.Host{Date: "2026-11-30T00:00:00Z", Kernel: "6.1.0", CPUs: 2}, ToolsImage: "berth.dev/perf-tools:x",
			Clusters: []ClusterEnv{{Role: Ref, Context: "kind-ref", ServerVersion: "v1.36.3", Nodes: []NodeEnv{{Name: "ref-worker"}}}}}}
	gbps := map[string]float64{NetRef: 10, NetBerthVXLAN: 8, NetBerthMacvlan: 12}
	for _, n := range NetNames {
		for _, pl := range Placements {
			for _, st := range p.Streams {
				c := &NetCase{Net: n, Placement: pl, Streams: st}
				if n == NetBerthMacvlan && pl == CrossNode {
					c.Skipped = "no macvlan"
				} else {
					c.Samples = []IperfSample{{Gbps: gbps[n] - 1}, {Gbps: gbps[n] + 1}, {Error: "iperf3: boom"}}
				}
				r.Throughput = append(r.Throughput, c)
			}
		}
	}
	for _, rate := range p.ShapedRates {
		mbps, _ := RateMbps(rate)
		for _, st := range p.ShapedStreams {
			for _, cl := range []string{Ref, Berth} {
				rtt := []float64{1, 2, 3, 4}
				if cl == Berth {
					rtt = []float64{0.5, 1, 1.5, 2}
				}
				r.Shaped = append(r.Shaped, &ShapedCase{Cluster: cl, Rate: rate, RateMbps: mbps, Streams: st,
					Samples: []ShapedSample{{Mbps: 0.95 * mbps, LateMbps: ptrTo(0.9 * mbps), RTTms: rtt, PingSent: 5, PingLost: 1, IdleRTTms: []float64{0.1}}}})
			}
		}
	}
	f := &FioPart{Node: "berth-worker", IOEngine: "io_uring", Jobs: csifio.Jobs(),
		Targets: []FioTarget{{Name: FioHostPath, Path: "/mnt/hostpath"}, {Name: FioBerth, Path: "/mnt/berth-csi"}}}
	for _, j := range f.Jobs {
		f.Samples = append(f.Samples,
			FioSample{Job: j.ID, Target: FioHostPath, FioResult: csifio.FioResult{BWBytes: 200 << 20, IOPS: 1000}},
			FioSample{Job: j.ID, Target: FioBerth, FioResult: csifio.FioResult{BWBytes: 100 << 20, IOPS: 900}})
	}
	f.Samples = append(f.Samples, FioSample{Job: f.Jobs[0].ID, Target: FioBerth, Error: "fio: exit 1"})
	r.Fio = f
	for _, cl := range []string{Ref, Berth} {
		for _, mode := range []string{StartSequential, StartBurst} {
			ms := 1000.0
			if cl == Berth {
				ms = 800
			}
			r.PodStart = append(r.PodStart, &PodStartSet{Cluster: cl, Mode: mode, Pods: 3,
				Records: []PodStart{{Name: "a", Ms: ms}, {Name: "b", Ms: ms * 2}, {Name: "c", Error: "not Ready"}}})
		}
	}
	return r
}

func TestFinalizeRatios(t *testing.T) {
	r := sample()
	r.Finalize()
	want := map[string]float64{
		"berth-vxlan ÷ ref-bridge, same node P1 throughput":   0.8,
		"berth-macvlan ÷ ref-bridge, same node P4 throughput": 1.2,
		"shaped 100M P1 achieved rate":                        1,
		"shaped 1G P4 RTT p50 under load":                     0.5,
		"shaped 1G P4 RTT p99 under load":                     0.5,
		"fio seq-write buffered, berth-csi ÷ hostPath":        0.5,
		"fio rand-read direct, berth-csi ÷ hostPath":          0.9,
		"pod start sequential p50":                            0.8,
		"pod start burst p99":                                 0.8,
	}
	got := map[string]float64{}
	for _, ra := range r.Ratios {
		got[ra.Measure] = ra.Ratio
	}
	for m, w := range want {
		if g, ok := got[m]; !ok || math.Abs(g-w) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", m, g, ok, w)
		}
	}
	if _, ok := got["berth-macvlan ÷ ref-bridge, cross node P1 throughput"]; !ok {
		t.Error("a skipped case must still have its ratio row (n/a)")
	} else if !math.IsNaN(got["berth-macvlan ÷ ref-bridge, cross node P1 throughput"]) {
		t.Error("a skipped case's ratio must be NaN")
	}
	// 2 nets × 2 placements × 2 streams + 2 rates × 2 streams × 4 + 8 fio + 4 pod start
	if n := len(r.Ratios); n != 8+16+8+4 {
		t.Errorf("%d ratios, want 36", n)
	}
	c := r.Net(NetRef, SameNode, 1)
	if c.Errors != 1 || *c.MedianGbps != 10 || *c.MinGbps != 9 || *c.MaxGbps != 11 {
		t.Errorf("ref same P1 summary: %+v", c)
	}
	s := r.ShapedOf(Berth, "100M", 1)
	if math.Abs(*s.Accuracy-0.95) > 1e-9 || math.Abs(*s.LateAcc-0.9) > 1e-9 || *s.LossPct != 20 || *s.RTTp99 != 2 {
		t.Errorf("shaped summary: accuracy %v late %v loss %v p99 %v", *s.Accuracy, *s.LateAcc, *s.LossPct, *s.RTTp99)
	}
	ps := r.PodStartOf(Berth, StartSequential)
	if ps.Errors != 1 || *ps.P50ms != 800 || *ps.P99ms != 1600 {
		t.Errorf("pod start summary: %+v", ps)
	}
	if fs, _ := r.Fio.summary(r.Fio.Jobs[0].ID, FioBerth); fs.Failed != 1 || fs.N != 1 {
		t.Errorf("fio summary: %+v", fs)
	}
}

// TestFilesRoundTrip: the outputs are well formed, and a saved kind.json
// renders to the same Markdown again (TestRender's path).
func TestFilesRoundTrip(t *testing.T) {
	files, err := Files(sample())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kind.json", "kind.md", "kind.svg", "kind-shaped.svg", "kind-rtt.svg", "kind-fio.svg", "kind-podstart.svg"} {
		if len(files[name]) == 0 {
			t.Errorf("%s missing", name)
		}
		if strings.HasSuffix(name, ".svg") {
			if err := xml.Unmarshal(files[name], new(struct{})); err != nil {
				t.Errorf("%s: not well-formed: %v", name, err)
			}
		}
	}
	md := string(files["kind.md"])
	for _, want := range []string{"## Every ratio", "berth-macvlan skipped", "no macvlan", "| seq-write buffered | MiB/s | 200 | 100 | 0.50 |", "pod start burst p99", "kind-ref",
		"| fio seq-write 1M, buffered / O_DIRECT, berth-csi vs hostPath (MiB/s) | 100 / 100 | 200 / 200 | 0.50 / 0.50 |",
		"| berth-macvlan vs ref-bridge, cross node, P1 / P4 (Gbit/s) | n/a / n/a | 10.00 / 10.00 | n/a / n/a |"} {
		if !strings.Contains(md, want) {
			t.Errorf("kind.md lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "kind.json")
	if err := os.WriteFile(path, files["kind.json"], 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Files(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(again["kind.md"]) != md {
		t.Error("kind.md re-rendered from kind.json differs")
	}
	if string(again["kind.json"]) != string(files["kind.json"]) {
		t.Error("kind.json does not round-trip")
	}
	var generic map[string]any
	if err := json.Unmarshal(files["kind.json"], &generic); err != nil {
		t.Fatal(err)
	}
}
