package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berthdev/berth/ebpf"
	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// Targets of the report (the suite's verdicts; never an exit status).
const (
	accuracyLow     = 0.93 // achieved goodput / target rate, lower bound (issue 3)
	accuracyHigh    = 1.03 // and upper bound
	overshootTarget = 1.5  // first-second peak / target rate, at most
	latencyTarget   = 0.5  // berth p99 / reference p99, at most
	overheadTarget  = 0.97 // tenancy on / off throughput, at least
	addTarget       = 1.0  // berth ADD / reference chain ADD, at most
)

// dpReport is dataplane.json.
type dpReport struct {
	Schema      string          `json:"schema"`
	Command     string          `json:"command"`
	Reproduce   string          `json:"reproduce"`
	Started     time.Time       `json:"started"`
	Finished    time.Time       `json:"finished"`
	Interrupted bool            `json:"interrupted"`
	Fatal       string          `json:"fatal,omitempty"`
	Machine     perfnet.Machine `json:"machine"`
	Params      params          `json:"params"`
	BerthBurst  []burstInfo     `json:"berthShaping"`
	Cases       []*shapeCase    `json:"shapingCases"`
	Accuracy    []*accCell      `json:"accuracy"`
	Latency     []*latProbe     `json:"latencyUnderLoad"`
	Overhead    []*tputCase     `json:"unshapedOverhead"`
	AddLatency  []*addVariant   `json:"addLatency"`
	Ratios      []ratio         `json:"ratios"`
	Cleanup     []string        `json:"cleanupProblems"`
	Notes       []string        `json:"notes"`
}

type params struct {
	Duration     string   `json:"duration"`
	Repeats      int      `json:"repeats"`
	Rates        []string `json:"rates"`
	Streams      []int    `json:"streams"`
	LatencyRates []string `json:"latencyRates"`
	Probe        string   `json:"probe"`
	CNICalls     int      `json:"cniCalls"`
	BigBurstBits uint64   `json:"bigBurstBits"`
	Quick        bool     `json:"quick"`
	Cases        []string `json:"cases"`
	Measures     []string `json:"measures"`
	BPFPinDir    string   `json:"bpfPinDir"`
}

// burstInfo is what berth does at a rate when no burst is given.
type burstInfo struct {
	Rate          string  `json:"rate"`
	DefaultBurst  uint64  `json:"defaultBurstBits"`
	BurstMs       float64 `json:"defaultBurstMs"`
	QueueBytes    uint32  `json:"queueBytes"`
	QueueMs       float64 `json:"queueMs"`
	GSOMaxSize    int     `json:"gsoMaxSize"`
	RefLimitBytes uint64  `json:"refTbfLimitBytesFairBurst"`
	RefLimitMs    float64 `json:"refTbfLimitMsFairBurst"`
}

// accCell is one case at one rate, direction and stream count.
type accCell struct {
	Case      string         `json:"case"`
	Kind      string         `json:"kind"`
	RateBps   uint64         `json:"rateBps"`
	Rate      string         `json:"rate"`
	Dir       string         `json:"direction"`
	Streams   int            `json:"streams"`
	Samples   []*shapeSample `json:"samples"`
	Ratio     *float64       `json:"medianRatio"`
	RatioMin  *float64       `json:"minRatio"`
	RatioMax  *float64       `json:"maxRatio"`
	FirstMax  *float64       `json:"medianFirstSecondMaxRatio"`
	FirstWst  *float64       `json:"worstFirstSecondMaxRatio"`
	FirstAvg  *float64       `json:"medianFirstSecondAvgRatio"`
	SteadyMax *float64       `json:"medianSteadyMaxRatio"`
	Steady    *float64       `json:"medianSteadyRatio"`
	Errors    int            `json:"errors"`
}

func (c *accCell) ok() []*shapeSample {
	var out []*shapeSample
	for _, s := range c.Samples {
		if s.Error == "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *accCell) summarize() {
	c.Errors = len(c.Samples) - len(c.ok())
	var ratio, first, avg, steady, sAvg []float64
	for _, s := range c.ok() {
		ratio = append(ratio, s.Ratio)
		sAvg = append(sAvg, s.SteadyAvg)
		first = append(first, s.FirstMax)
		avg = append(avg, s.FirstAvg)
		steady = append(steady, s.SteadyMax)
	}
	lo, hi := report.MinMax(ratio)
	c.Ratio, c.RatioMin, c.RatioMax = perfnet.FPtr(report.Median(ratio)), perfnet.FPtr(lo), perfnet.FPtr(hi)
	_, worst := report.MinMax(first)
	c.FirstMax, c.FirstWst = perfnet.FPtr(report.Median(first)), perfnet.FPtr(worst)
	c.FirstAvg, c.SteadyMax = perfnet.FPtr(report.Median(avg)), perfnet.FPtr(report.Median(steady))
	c.Steady = perfnet.FPtr(report.Median(sAvg))
}

// latProbe is RTT through one shaped direction under load.
type latProbe struct {
	Case     string   `json:"case"`
	Kind     string   `json:"kind"`
	RateBps  uint64   `json:"rateBps"`
	Rate     string   `json:"rate"`
	Dir      string   `json:"direction"`
	IdleP50  *float64 `json:"idleP50Ms"`
	IdleP99  *float64 `json:"idleP99Ms"`
	P50      *float64 `json:"p50Ms"`
	P90      *float64 `json:"p90Ms"`
	P99      *float64 `json:"p99Ms"`
	Max      *float64 `json:"maxMs"`
	Sent     int      `json:"sent"`
	Received int      `json:"received"`
	LossPct  float64  `json:"lossPct"`
	LoadMbps float64  `json:"loadMbps"`
	// LoadIntervals is the load's receiver goodput per second (the probe
	// runs from 1.5 s on), to show the queue was kept full throughout.
	LoadIntervals []float64 `json:"loadIntervalsMbps,omitempty"`
	RTTms         []float64 `json:"rttMs,omitempty"`
	Error         string    `json:"error,omitempty"`
}

// tputCase is an unshaped pod pair (overhead test).
type tputCase struct {
	Name     string      `json:"name"`
	Desc     string      `json:"description"`
	Status   string      `json:"status"`
	Error    string      `json:"error,omitempty"`
	PodMTU   int         `json:"podMTU"`
	Programs string      `json:"programsOnServerEth0,omitempty"`
	Streams  []*tputCell `json:"results"`
	tag      string
	tenancy  bool
	server   *pod
	client   *pod
}

type tputCell = perfnet.StreamResult

// addVariant is one configuration of the ADD latency benchmark.
type addVariant struct {
	Name        string    `json:"name"`
	Desc        string    `json:"description"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	Calls       int       `json:"calls"`
	AddMs       []float64 `json:"addMs"`
	DelMs       []float64 `json:"delMs"`
	AddP50      *float64  `json:"addP50Ms"`
	AddP99      *float64  `json:"addP99Ms"`
	DelP50      *float64  `json:"delP50Ms"`
	DelP99      *float64  `json:"delP99Ms"`
	AddErrors   int       `json:"addErrors"`
	DelErrors   int       `json:"delErrors"`
	FirstErrors []string  `json:"errors,omitempty"`
	tag         string
	berth       bool
	tenancy     bool
	bw          *bandwidth
	net         *network
	pods        []string
	added       []*pod
	fails       int
}

func (v *addVariant) fail(err error) { v.Status, v.Error = "failed", err.Error() }

func (v *addVariant) note(err error) {
	if len(v.FirstErrors) < 5 {
		v.FirstErrors = append(v.FirstErrors, perfnet.Tail(err.Error(), 500))
	}
}

func (v *addVariant) summarize() {
	p := func(xs []float64, q float64) *float64 {
		if len(xs) == 0 {
			return nil
		}
		return perfnet.FPtr(report.Percentile(xs, q))
	}
	v.AddP50, v.AddP99 = p(v.AddMs, 50), p(v.AddMs, 99)
	v.DelP50, v.DelP99 = p(v.DelMs, 50), p(v.DelMs, 99)
	if v.Status == "" {
		v.Status = "ok"
		if len(v.AddMs) == 0 {
			v.Status = "failed"
			if v.Error == "" && len(v.FirstErrors) > 0 {
				v.Error = v.FirstErrors[0]
			}
		}
	}
}

// ratio is one comparison against a target.
type ratio struct {
	Section string   `json:"section"`
	Name    string   `json:"name"`
	Metric  string   `json:"metric"`
	Value   *float64 `json:"value"`
	Target  string   `json:"target"`
	Result  string   `json:"result"` // "target met", "target missed", "n/a"
	Noise   string   `json:"noise,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

func pct(xs []float64, q float64) float64 { return report.Percentile(xs, q) }

func minMax(xs []float64) (float64, float64) { return report.MinMax(xs) }

func ms(p *float64) string {
	if p == nil {
		return "n/a"
	}
	if *p >= 100 {
		return fmt.Sprintf("%.0f", *p)
	}
	return fmt.Sprintf("%.2f", *p)
}

func keysOf(m map[string]bool, order string) []string {
	var out []string
	for _, k := range strings.Split(order, ",") {
		if m[k] {
			out = append(out, k)
		}
	}
	return out
}

func newReport(ctx context.Context, h *harness, args []string, t0 time.Time) *dpReport {
	o := h.opts
	shown := perfnet.DisplayArgs(args)
	r := &dpReport{
		Schema:    "berth-dataplane/v1",
		Command:   strings.TrimSpace("go run ./test/perf/dataplane " + perfnet.QuoteArgs(shown)),
		Reproduce: scriptCommand(shown),
		Started:   t0,
		Params: params{
			Duration: o.duration.String(), Repeats: o.repeats, Streams: o.streams, Probe: o.probe.String(),
			CNICalls: o.cniCalls, BigBurstBits: o.bigBurstBits, Quick: o.quick,
			Cases: keysOf(o.cases, allCases), Measures: keysOf(o.measures, allMeasures),
		},
		Notes: []string{
			"2-core noisy VM: iperf3 client and server, softirq work, the shapers and the plugins share two vCPUs, so absolute numbers move by several percent run to run; compare cases of the same run (they are interleaved for that), not across runs.",
			"Topologies are network namespaces on one kernel: 'wire' speed is memory bandwidth, not a NIC; a shaper is the only bottleneck on a shaped path.",
		},
	}
	for _, x := range o.rates {
		r.Params.Rates = append(r.Params.Rates, mbit(x))
		b := ebpf.DefaultBurst(x)
		q := ebpf.QueueBytes(x)
		// The reference plugin's TBF limit: 25 ms at the rate plus the burst.
		refLimit := x/8*25/1000 + burstFor(x)/8
		r.BerthBurst = append(r.BerthBurst, burstInfo{
			Rate: mbit(x), DefaultBurst: b, BurstMs: float64(b) / float64(x) * 1000,
			QueueBytes: q, QueueMs: float64(q) * 8 / float64(x) * 1000, GSOMaxSize: ebpf.GSOFor(x),
			RefLimitBytes: refLimit, RefLimitMs: float64(refLimit) * 8 / float64(x) * 1000,
		})
	}
	for _, x := range o.latRates {
		r.Params.LatencyRates = append(r.Params.LatencyRates, mbit(x))
	}
	r.Machine = perfnet.CollectMachine(ctx, t0, perfnet.MachineOpts{
		Iperf3: o.iperf3, RefPlugin: h.refPlugin("bandwidth"), RefName: "reference bandwidth plugin",
		BerthFlag: o.berthBin, Berth: h.berth, BerthErr: h.berthErr,
	})
	return r
}

// scriptCommand is the hack/perf-dataplane.sh line that repeats a run:
// the script passes --berth-bin and --out itself (from BERTH_BIN and OUT).
func scriptCommand(args []string) string {
	var env, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "berth-bin" || name == "out") {
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			def := map[string]string{"berth-bin": "_output/bin/berth", "out": "test/perf/results"}[name]
			if val != def {
				env = append(env, map[string]string{"berth-bin": "BERTH_BIN", "out": "OUT"}[name]+"="+perfnet.QuoteArgs([]string{val}))
			}
			continue
		}
		rest = append(rest, a)
	}
	return strings.TrimSpace(strings.Join(append(env, "hack/perf-dataplane.sh", perfnet.QuoteArgs(rest)), " "))
}

// finish records the end of the run and computes medians and ratios.
func (r *dpReport) finish(t time.Time) {
	r.Finished = t
	r.Machine.End()
	r.compute()
}

// compute derives every median, percentile and verdict from the samples
// (also used by --render on a saved dataplane.json).
func (r *dpReport) compute() {
	for _, c := range r.Accuracy {
		c.summarize()
	}
	for _, c := range r.Overhead {
		for _, s := range c.Streams {
			xs := s.Gbps()
			lo, hi := report.MinMax(xs)
			s.MedianGbps, s.MinGbps, s.MaxGbps = perfnet.FPtr(report.Median(xs)), perfnet.FPtr(lo), perfnet.FPtr(hi)
			s.Errors = len(s.Samples) - len(xs)
		}
	}
	for _, v := range r.AddLatency {
		v.summarize()
	}
	r.Ratios = nil
	r.accuracyRatios()
	r.overshootRatios()
	r.firstSecondRatios()
	r.latencyRatios()
	r.overheadRatios()
	r.addRatios()
}

func (r *dpReport) caseStatus(name string) string {
	for _, c := range r.Cases {
		if c.Name == name {
			if c.Status == "ok" {
				return ""
			}
			return name + " " + c.Status
		}
	}
	return name + " not run"
}

func (r *dpReport) accuracyRatios() {
	for _, c := range r.Accuracy {
		rt := ratio{Section: "accuracy", Name: fmt.Sprintf("%s %s %s P%d", c.Case, c.Rate, c.Dir, c.Streams),
			Metric: "achieved goodput / target", Target: fmt.Sprintf("%.2f–%.2f", accuracyLow, accuracyHigh)}
		switch {
		case r.caseStatus(c.Case) != "":
			rt.Result, rt.Reason = "n/a", r.caseStatus(c.Case)
		case c.Ratio == nil:
			rt.Result, rt.Reason = "n/a", "no successful samples"
		default:
			rt.Value = c.Ratio
			rt.Result = perfnet.Verdict(*c.Ratio >= accuracyLow-1e-9 && *c.Ratio <= accuracyHigh+1e-9)
			rt.Noise = bandNoise(c)
		}
		r.Ratios = append(r.Ratios, rt)
	}
}

// bandNoise says whether every sample agrees with the median's verdict.
func bandNoise(c *accCell) string {
	if c.RatioMin == nil || len(c.ok()) < 2 {
		return "single sample: no noise estimate"
	}
	in := func(v float64) bool { return v >= accuracyLow-1e-9 && v <= accuracyHigh+1e-9 }
	if in(*c.RatioMin) == in(*c.RatioMax) && in(*c.RatioMin) == in(*c.Ratio) {
		return fmt.Sprintf("clear (all samples %.3f–%.3f)", *c.RatioMin, *c.RatioMax)
	}
	return fmt.Sprintf("within noise (samples %.3f–%.3f straddle the band)", *c.RatioMin, *c.RatioMax)
}

func (r *dpReport) overshootRatios() {
	for _, c := range r.Accuracy {
		rt := ratio{Section: "overshoot", Name: fmt.Sprintf("%s %s %s P%d", c.Case, c.Rate, c.Dir, c.Streams),
			Metric: "peak 100 ms rate in the first second / target", Target: fmt.Sprintf("<= %.1f", overshootTarget)}
		switch {
		case r.caseStatus(c.Case) != "":
			rt.Result, rt.Reason = "n/a", r.caseStatus(c.Case)
		case c.FirstMax == nil:
			rt.Result, rt.Reason = "n/a", "no successful samples"
		default:
			rt.Value = c.FirstMax
			rt.Result = perfnet.Verdict(*c.FirstMax <= overshootTarget+1e-9)
			switch {
			case len(c.ok()) < 2:
				rt.Noise = "single sample: no noise estimate"
			case (*c.FirstWst <= overshootTarget) != (*c.FirstMax <= overshootTarget):
				rt.Noise = fmt.Sprintf("within noise (worst repeat %.2f)", *c.FirstWst)
			default:
				rt.Noise = fmt.Sprintf("clear (worst repeat %.2f)", *c.FirstWst)
			}
			if c.SteadyMax != nil && *c.SteadyMax > overshootTarget {
				rt.Noise += fmt.Sprintf("; steady-state 100 ms peaks reach %.2f too (receive-side jitter)", *c.SteadyMax)
			}
		}
		r.Ratios = append(r.Ratios, rt)
	}
}

// firstSecondRatios judges the whole first second (bytes that arrived in
// it / target): the token bucket's burst spread over a second rather than
// concentrated in one 100 ms window.
func (r *dpReport) firstSecondRatios() {
	for _, c := range r.Accuracy {
		rt := ratio{Section: "overshoot-1s", Name: fmt.Sprintf("%s %s %s P%d", c.Case, c.Rate, c.Dir, c.Streams),
			Metric: "first-second average rate / target", Target: fmt.Sprintf("<= %.1f", overshootTarget)}
		switch {
		case r.caseStatus(c.Case) != "":
			rt.Result, rt.Reason = "n/a", r.caseStatus(c.Case)
		case c.FirstAvg == nil:
			rt.Result, rt.Reason = "n/a", "no successful samples"
		default:
			rt.Value = c.FirstAvg
			rt.Result = perfnet.Verdict(*c.FirstAvg <= overshootTarget+1e-9)
		}
		r.Ratios = append(r.Ratios, rt)
	}
}

func (r *dpReport) findProbe(name, rate, dir string) *latProbe {
	for _, p := range r.Latency {
		if p.Case == name && p.Rate == rate && p.Dir == dir {
			return p
		}
	}
	return nil
}

func (r *dpReport) latencyRatios() {
	for _, p := range r.Latency {
		if p.Kind != "berth" {
			continue
		}
		for _, ref := range []string{caseRef, caseRefBig} {
			rt := ratio{Section: "latency", Name: fmt.Sprintf("%s / %s %s %s", p.Case, ref, p.Rate, p.Dir),
				Metric: "RTT p99 under load", Target: fmt.Sprintf("<= %.2f", latencyTarget)}
			d := r.findProbe(ref, p.Rate, p.Dir)
			switch {
			case r.caseStatus(p.Case) != "":
				rt.Result, rt.Reason = "n/a", r.caseStatus(p.Case)
			case d == nil || r.caseStatus(ref) != "":
				rt.Result, rt.Reason = "n/a", ref+" not measured"
			case p.P99 == nil || d.P99 == nil || *d.P99 == 0:
				rt.Result, rt.Reason = "n/a", "missing data (see the latency table)"
			default:
				v := *p.P99 / *d.P99
				rt.Value = &v
				rt.Result = perfnet.Verdict(v <= latencyTarget+1e-9)
				rt.Noise = fmt.Sprintf("one probe each (%d / %d replies); loss %.1f%% / %.1f%%", p.Received, d.Received, p.LossPct, d.LossPct)
			}
			r.Ratios = append(r.Ratios, rt)
		}
	}
}

func (r *dpReport) overheadRatios() {
	if len(r.Overhead) < 2 {
		return
	}
	on, off := r.Overhead[0], r.Overhead[1]
	for i, st := range r.Params.Streams {
		rt := ratio{Section: "overhead", Name: fmt.Sprintf("%s / %s P%d", on.Name, off.Name, st),
			Metric: "median throughput", Target: fmt.Sprintf(">= %.2f", overheadTarget)}
		if i >= len(on.Streams) || i >= len(off.Streams) {
			continue
		}
		n, d := on.Streams[i], off.Streams[i]
		switch {
		case on.Status != "ok":
			rt.Result, rt.Reason = "n/a", on.Name+" "+on.Status
		case off.Status != "ok":
			rt.Result, rt.Reason = "n/a", off.Name+" "+off.Status
		case n.MedianGbps == nil || d.MedianGbps == nil || *d.MedianGbps == 0:
			rt.Result, rt.Reason = "n/a", "no successful samples"
		default:
			v := *n.MedianGbps / *d.MedianGbps
			rt.Value = &v
			rt.Result = perfnet.Verdict(v >= overheadTarget-1e-9)
			if len(n.Gbps()) >= 2 && len(d.Gbps()) >= 2 {
				if *n.MaxGbps < overheadTarget**d.MinGbps || *n.MinGbps > overheadTarget**d.MaxGbps {
					rt.Noise = "clear (sample ranges do not overlap)"
				} else {
					rt.Noise = "within noise (sample ranges overlap)"
				}
			} else {
				rt.Noise = "single sample: no noise estimate"
			}
		}
		r.Ratios = append(r.Ratios, rt)
	}
}

func (r *dpReport) addVariant(name string) *addVariant {
	for _, v := range r.AddLatency {
		if v.Name == name {
			return v
		}
	}
	return nil
}

func (r *dpReport) addRatios() {
	ref := r.addVariant("ref-ptp-bandwidth")
	for _, num := range []string{"berth-dataplane", "berth-bandwidth", "berth-plain"} {
		n := r.addVariant(num)
		for _, m := range []struct {
			name string
			f    func(*addVariant) *float64
		}{{"ADD p50", func(v *addVariant) *float64 { return v.AddP50 }}, {"ADD p99", func(v *addVariant) *float64 { return v.AddP99 }}} {
			rt := ratio{Section: "add-latency", Name: num + " / ref-ptp-bandwidth", Metric: m.name, Target: fmt.Sprintf("<= %.2f", addTarget)}
			switch {
			case n == nil || ref == nil:
				continue
			case n.Status != "ok" || ref.Status != "ok" || m.f(n) == nil || m.f(ref) == nil || *m.f(ref) == 0:
				rt.Result, rt.Reason = "n/a", "missing data (see the ADD table)"
			default:
				v := *m.f(n) / *m.f(ref)
				rt.Value = &v
				rt.Result = perfnet.Verdict(v <= addTarget+1e-9)
				if m.name == "ADD p99" && len(n.AddMs) < 100 {
					rt.Noise = fmt.Sprintf("p99 of %d calls is their maximum", len(n.AddMs))
				}
			}
			r.Ratios = append(r.Ratios, rt)
		}
	}
}

// referenceFailed is true when a reference case (not berth) failed: then
// the harness or machine, not berth, is at fault.
func (r *dpReport) referenceFailed() bool {
	for _, c := range r.Cases {
		if c.Kind == "reference" && c.Status != "ok" {
			return true
		}
	}
	if v := r.addVariant("ref-ptp-bandwidth"); v != nil && v.Status != "ok" {
		return true
	}
	return false
}

// dataplaneCost is berth-dataplane minus berth-plain ADD p50 (ms).
func (r *dpReport) dataplaneCost(num string) *float64 {
	a, b := r.addVariant(num), r.addVariant("berth-plain")
	if a == nil || b == nil || a.AddP50 == nil || b.AddP50 == nil {
		return nil
	}
	return perfnet.FPtr(*a.AddP50 - *b.AddP50)
}
