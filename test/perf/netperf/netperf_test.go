package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// Unit tests only: nothing here needs root or creates namespaces. The
// harness itself is exercised by running it (hack/perf-net.sh --quick).

const iperfOut = `{"start":{},"intervals":[],"end":{
 "sum_sent":{"bits_per_second":2.1e10,"retransmits":17},
 "sum_received":{"bits_per_second":2.05e10},
 "cpu_utilization_percent":{"host_total":91.5,"remote_total":60.25}}}`

func TestParseIperf(t *testing.T) {
	s, err := parseIperf([]byte(iperfOut))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(s.Gbps-20.5) > 1e-9 || s.Retransmits != 17 || s.CPUClient != 91.5 || s.CPUServer != 60.25 {
		t.Errorf("got %+v", s)
	}
	_, err = parseIperf([]byte(`{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}`))
	if err == nil || !retryable(err) {
		t.Errorf("connect error should be a retryable error, got %v", err)
	}
	if _, err := parseIperf([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
	if _, err := parseIperf([]byte(`{"end":{}}`)); err == nil {
		t.Error("empty result accepted")
	}
}

func TestFirstIPAndPrevResult(t *testing.T) {
	res := []byte(`{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"198.18.10.7/24","gateway":"198.18.10.1"}]}`)
	ip, err := firstIP(res)
	if err != nil || ip != "198.18.10.7" {
		t.Fatalf("firstIP = %q, %v", ip, err)
	}
	if _, err := firstIP([]byte(`{"ips":[]}`)); err == nil {
		t.Error("no ips accepted")
	}
	conf := berthMacvlanConf("bperf-mv", "198.18.10.0/24", "/tmp/x")
	del := withPrevResult(conf, res)
	var m map[string]any
	if err := json.Unmarshal(del, &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "berth" || m["mode"] != "macvlan" || m["master"] != "bpm0" || m["macvlanMode"] != "bridge" {
		t.Errorf("conf lost fields: %v", m)
	}
	prev, ok := m["prevResult"].(map[string]any)
	if !ok || prev["cniVersion"] != "1.1.0" {
		t.Errorf("prevResult not injected: %v", m["prevResult"])
	}
	if got := withPrevResult(conf, nil); string(got) != string(conf) {
		t.Error("conf changed without a result")
	}
}

func TestParseFlagsQuick(t *testing.T) {
	o, err := parseFlags([]string{"--quick"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 2*time.Second || o.repeats != 1 || o.cniCalls != 20 {
		t.Errorf("quick defaults: %+v", o)
	}
	o, err = parseFlags([]string{"--quick", "--duration", "5s", "--streams", "1,2,8", "--cases", "veth-raw,cni-latency"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || o.repeats != 1 || len(o.streams) != 3 || !o.want("veth-raw") || o.want("macvlan-ref") {
		t.Errorf("explicit flags must win over --quick: %+v", o)
	}
	o, _ = parseFlags(nil)
	if o.duration != 10*time.Second || o.repeats != 3 || o.cniCalls != 200 || len(o.streams) != 2 || !o.want("vxlan-berth") {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range [][]string{{"--cases", "nope"}, {"--streams", "0"}, {"--duration", "100ms"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func sample(gbps ...float64) []iperfSample {
	var s []iperfSample
	for _, g := range gbps {
		s = append(s, iperfSample{Gbps: g})
	}
	return s
}

func TestRatiosAndVerdicts(t *testing.T) {
	r := &netReport{Params: params{Streams: []int{1}}}
	add := func(name, kind, status string, gbps ...float64) {
		r.Throughput = append(r.Throughput, &caseResult{Name: name, Kind: kind, Status: status,
			Streams: []*streamResult{{Streams: 1, Samples: sample(gbps...)}}})
	}
	add("veth-raw", "baseline", "ok", 35, 36, 34)
	add("macvlan-ref", "reference", "ok", 30, 31, 29)
	add("macvlan-berth", "berth", "ok", 29.5, 29, 30.5) // 29.5/30 = 0.983
	add("vxlan-flannel-like", "reference", "ok", 10, 10, 10)
	add("vxlan-berth", "berth", "failed")
	r.CNILatency = []*latencyResult{
		{Plugin: "ref", Status: "ok", AddMs: []float64{10, 12}, DelMs: []float64{5, 6}},
		{Plugin: "berth", Status: "ok", AddMs: []float64{8, 20}, DelMs: []float64{5, 6}},
	}
	for _, l := range r.CNILatency {
		l.summarize()
	}
	r.finish(time.Now())
	byName := map[string]ratio{}
	for _, rt := range append(r.Ratios, r.LatRatios...) {
		byName[rt.Name+" "+rt.Metric] = rt
	}
	check := func(key, result string, value float64) {
		t.Helper()
		rt, ok := byName[key]
		if !ok {
			t.Fatalf("no ratio %q in %v", key, byName)
		}
		if rt.Result != result {
			t.Errorf("%s: result %q, want %q (%+v)", key, rt.Result, result, rt)
		}
		if !math.IsNaN(value) && (rt.Value == nil || math.Abs(*rt.Value-value) > 1e-3) {
			t.Errorf("%s: value %v, want %v", key, rt.Value, value)
		}
	}
	check("macvlan-berth / macvlan-ref P1 median throughput", "target met", 29.5/30)
	check("macvlan-berth / veth-raw P1 median throughput", "target met", 29.5/35)
	check("vxlan-berth / vxlan-flannel-like P1 median throughput", "n/a", math.NaN())
	check("berth / ref ADD p50 ADD p50 latency", "target met", 0.8)
	check("berth / ref ADD p99 ADD p99 latency", "target missed", 20.0/12)
	check("berth / ref DEL p50 DEL p50 latency", "target met", 1)
	if got := byName["macvlan-berth / macvlan-ref P1 median throughput"].Noise; !strings.HasPrefix(got, "within noise") {
		t.Errorf("overlapping ranges: noise = %q", got)
	}
	if got := byName["macvlan-berth / veth-raw P1 median throughput"].Noise; !strings.HasPrefix(got, "clear") {
		t.Errorf("disjoint ranges: noise = %q", got)
	}
	if r.referenceFailed() {
		t.Error("a berth failure must not count as a reference failure")
	}
	// The report renders with failed cases and missing data.
	md := markdown(r)
	for _, want := range []string{"| `vxlan-berth` | n/a |", "target missed", "net.svg", "2-core noisy VM"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if svg := string(throughputChart(r)); !strings.Contains(svg, "n/a") || !strings.Contains(svg, "macvlan-berth") {
		t.Error("chart lacks the failed case or a group label")
	}
	r.Throughput[1].Status = "failed"
	if !r.referenceFailed() {
		t.Error("reference failure not detected")
	}
}

func TestDisplayArgs(t *testing.T) {
	got := quoteArgs(displayArgs([]string{"--berth-bin", "b", "--berth-build-error", "x y", "--quick", "--berth-build-error=z"}))
	if got != "--berth-bin b --quick" {
		t.Errorf("got %q", got)
	}
}
