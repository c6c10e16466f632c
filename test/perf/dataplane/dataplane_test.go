package main

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// Unit tests only: nothing here needs root or creates namespaces. The
// harness itself is exercised by running it (hack/perf-dataplane.sh --quick).

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 3*time.Second || o.repeats != 3 || o.cniCalls != 100 || o.probe != 8*time.Second ||
		len(o.rates) != 3 || o.rates[2] != 1e9 || len(o.streams) != 2 || len(o.bigStreams) != 1 ||
		len(o.cases) != 4 || len(o.measures) != 4 || o.bigBurstBits != math.MaxUint32 {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseFlags([]string{"--quick"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 2*time.Second || o.repeats != 1 || o.cniCalls != 10 || o.probe != 3*time.Second || len(o.latRates) != 1 {
		t.Errorf("quick: %+v", o)
	}
	o, err = parseFlags([]string{"--quick", "--repeats", "2", "--rates", "2.5,50", "--latency-rates", "50", "--cases", "berth-veth", "--measure", "accuracy,latency"})
	if err != nil {
		t.Fatal(err)
	}
	if o.repeats != 2 || o.rates[0] != 2_500_000 || !o.cases[caseBerthVe] || o.cases[caseRef] || !o.measures["latency"] || o.measures["overhead"] {
		t.Errorf("explicit flags must win over --quick: %+v", o)
	}
	for _, bad := range [][]string{
		{"--cases", "nope"}, {"--measure", "x"}, {"--rates", "0"}, {"--latency-rates", "7"},
		{"--duration", "1s"}, {"--cni-calls", "300"}, {"--streams", "0"}, {"extra"}, {"--big-burst", "8"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if mbit(10e6) != "10M" || mbit(2_500_000) != "2.5M" {
		t.Error("mbit labels")
	}
}

func TestIntervalStats(t *testing.T) {
	// 10 Mbit/s target: a 2 Mbit burst in the first 100 ms, then the
	// rate; a ragged 20 ms tail interval must not count.
	var iv []perfnet.IperfInterval
	add := func(start, end, mbits float64) {
		iv = append(iv, perfnet.IperfInterval{Start: start, End: end, Bytes: mbits * 1e6 / 8})
	}
	add(0, 0.1, 2)
	for i := 1; i < 30; i++ {
		add(float64(i)/10, float64(i+1)/10, 1)
	}
	add(3.0, 3.02, 0.5)
	first, avg, steady, steadyAvg := intervalStats(iv, 10e6)
	if math.Abs(first-2) > 1e-9 {
		t.Errorf("first-second peak %v, want 2", first)
	}
	if math.Abs(avg-1.1) > 1e-9 {
		t.Errorf("first-second average %v, want 1.1", avg)
	}
	if math.Abs(steady-1) > 1e-9 || math.Abs(steadyAvg-1) > 1e-9 {
		t.Errorf("steady %v / %v, want 1 / 1", steady, steadyAvg)
	}
}

func TestScriptCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--berth-bin", "_output/bin/berth", "--out", "test/perf/results"}, "hack/perf-dataplane.sh"},
		{[]string{"--berth-bin=/tmp/b", "--quick", "--out", "/tmp/o x"}, "BERTH_BIN=/tmp/b OUT='/tmp/o x' hack/perf-dataplane.sh --quick"},
		{[]string{"--cases", "berth-veth"}, "hack/perf-dataplane.sh --cases berth-veth"},
	} {
		if got := scriptCommand(tc.args); got != tc.want {
			t.Errorf("scriptCommand(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestBandwidthCapability(t *testing.T) {
	m := (&bandwidth{IngressRate: 10e6, EgressRate: 10e6}).capability()
	if len(m) != 2 || m["ingressRate"] != uint64(10e6) {
		t.Errorf("zero bursts must be left out: %v", m)
	}
	m = (&bandwidth{IngressRate: 1, IngressBurst: 2, EgressRate: 3, EgressBurst: 4}).capability()
	if len(m) != 4 || m["egressBurst"] != uint64(4) {
		t.Errorf("capability %v", m)
	}
}

func sampleReport() *dpReport {
	r := &dpReport{Reproduce: scriptCommand(nil), Params: params{Rates: []string{"10M"}, Streams: []int{1}, LatencyRates: []string{"10M"}, Repeats: 2, Duration: "3s", Probe: "8s", CNICalls: 2}}
	for _, c := range []struct{ name, kind, status string }{{caseRef, "reference", "ok"}, {caseBerthVe, "berth", "ok"}, {caseBerthMv, "berth", "failed"}} {
		r.Cases = append(r.Cases, &shapeCase{Name: c.name, Kind: c.kind, Status: c.status, PodMTU: 1500,
			Qdiscs: map[string]string{"10M": "qdisc htb 1: root"}, Burst: map[string]uint64{"10M": 0}})
	}
	cell := func(name, kind, dir string, ratios ...float64) {
		c := &accCell{Case: name, Kind: kind, Rate: "10M", RateBps: 10e6, Dir: dir, Streams: 1}
		for i, x := range ratios {
			c.Samples = append(c.Samples, &shapeSample{Repeat: i + 1, Ratio: x, Mbps: 10 * x, FirstMax: 2 * x, FirstAvg: x + 0.05, SteadyMax: 1, SteadyAvg: x})
		}
		r.Accuracy = append(r.Accuracy, c)
	}
	for _, d := range directions {
		cell(caseRef, "reference", d, 0.95, 0.96)
		cell(caseBerthVe, "berth", d, 0.955, 1.05)
		cell(caseBerthMv, "berth", d)
	}
	p99 := func(v float64) *float64 { return &v }
	r.Latency = []*latProbe{
		{Case: caseRef, Kind: "reference", Rate: "10M", Dir: "egress", P50: p99(100), P99: p99(130), Received: 160, Sent: 160},
		{Case: caseBerthVe, Kind: "berth", Rate: "10M", Dir: "egress", P50: p99(12), P99: p99(14), Received: 150, Sent: 160, LossPct: 6.25},
	}
	r.Overhead = []*tputCase{
		{Name: "berth-macvlan-dataplane", Status: "ok", Streams: []*tputCell{{Streams: 1, Samples: []perfnet.IperfSample{{Gbps: 19}, {Gbps: 20}}}}},
		{Name: "berth-macvlan-plain", Status: "ok", Streams: []*tputCell{{Streams: 1, Samples: []perfnet.IperfSample{{Gbps: 20}, {Gbps: 20.1}}}}},
	}
	r.AddLatency = []*addVariant{
		{Name: "berth-dataplane", Calls: 2, AddMs: []float64{40, 44}, DelMs: []float64{1, 2}},
		{Name: "berth-plain", Calls: 2, AddMs: []float64{10, 11}, DelMs: []float64{1, 2}},
		{Name: "ref-ptp-bandwidth", Calls: 2, AddMs: []float64{15, 16}, DelMs: []float64{1, 2}},
	}
	return r
}

func TestVerdicts(t *testing.T) {
	r := sampleReport()
	r.finish(time.Now())
	got := map[string]ratio{}
	for _, rt := range r.Ratios {
		got[rt.Section+" "+rt.Name+" "+rt.Metric] = rt
	}
	check := func(key, result string, value float64) {
		t.Helper()
		rt, ok := got[key]
		if !ok {
			var keys []string
			for k := range got {
				keys = append(keys, k)
			}
			t.Fatalf("no ratio %q in\n%s", key, strings.Join(keys, "\n"))
		}
		if rt.Result != result {
			t.Errorf("%s: %q, want %q (%+v)", key, rt.Result, result, rt)
		}
		if !math.IsNaN(value) && (rt.Value == nil || math.Abs(*rt.Value-value) > 1e-6) {
			t.Errorf("%s: value %v, want %v", key, rt.Value, value)
		}
	}
	check("accuracy ref-bandwidth-veth 10M egress P1 achieved goodput / target", "target met", 0.955)
	// 1.0025 lies inside the 0.93–1.03 band.
	check("accuracy berth-veth 10M egress P1 achieved goodput / target", "target met", (0.955+1.05)/2)
	check("accuracy berth-macvlan 10M egress P1 achieved goodput / target", "n/a", math.NaN())
	check("overshoot berth-veth 10M ingress P1 peak 100 ms rate in the first second / target", "target missed", 2.005)
	check("overshoot-1s berth-veth 10M ingress P1 first-second average rate / target", "target met", 1.0525)
	check("latency berth-veth / ref-bandwidth-veth 10M egress RTT p99 under load", "target met", 14.0/130)
	check("latency berth-veth / ref-bandwidth-veth-bigburst 10M egress RTT p99 under load", "n/a", math.NaN())
	check("overhead berth-macvlan-dataplane / berth-macvlan-plain P1 median throughput", "target met", 19.5/20.05)
	check("add-latency berth-dataplane / ref-ptp-bandwidth ADD p50", "target missed", 40.0/15)
	if v := got["accuracy berth-veth 10M egress P1 achieved goodput / target"].Noise; !strings.HasPrefix(v, "within noise") {
		t.Errorf("straddling samples: noise %q", v)
	}
	if r.referenceFailed() {
		t.Error("a berth failure must not count as a reference failure")
	}
	if c := r.dataplaneCost("berth-dataplane"); c == nil || *c != 30 {
		t.Errorf("dataplane cost %v", c)
	}
	md := markdown(r)
	for _, want := range []string{"2-core noisy VM", "0.956", "cannot shape macvlan", "DefaultBurst", "math.MaxUint32",
		"dataplane-accuracy-p1.svg", "dataplane-latency.svg", "target missed", "+30.0 ms", "hack/perf-dataplane.sh"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for _, c := range charts(r) {
		d := xml.NewDecoder(strings.NewReader(string(c.svg)))
		for {
			if _, err := d.Token(); err != nil {
				if err.Error() != "EOF" {
					t.Errorf("%s not well-formed: %v", c.file, err)
				}
				break
			}
		}
	}
	if len(charts(r)) != 5 {
		t.Errorf("charts: %d, want accuracy-p1, overshoot, latency, overhead, add (+1 per extra stream count) = 5", len(charts(r)))
	}
	if s := summaryText(r); !strings.Contains(s, "missed:") {
		t.Errorf("summary lacks the missed berth verdicts:\n%s", s)
	}
}
