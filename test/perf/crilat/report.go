// Package crilat is the CRI performance suite: pod start latency, stop +
// remove latency and resident memory of berth-cri, compared in the same run
// with containerd 2.2's built-in CRI on the same containerd build, images
// and CNI config.
//
// The measurement is TestCRILatency (crilat_test.go): it needs root and the
// CRI tools, so it only runs with BERTH_PERF_CRI=1 (hack/perf-cri.sh, make
// perf). This file is the pure part, unit-tested without root: the result
// types, order statistics, the ratios against the targets and the
// JSON, Markdown and SVG outputs.
package crilat

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// Runtime names, as they appear in the report.
const (
	Berth     = "berth-cri"
	Reference = "containerd"
)

// Ops: the whole pod start and stop + remove, and each RPC on its own.
const (
	OpStart            = "start" // RunPodSandbox + CreateContainer + StartContainer
	OpRunPodSandbox    = "RunPodSandbox"
	OpCreateContainer  = "CreateContainer"
	OpStartContainer   = "StartContainer"
	OpStopRemove       = "stop+remove" // StopPodSandbox + RemovePodSandbox
	OpStopPodSandbox   = "StopPodSandbox"
	OpRemovePodSandbox = "RemovePodSandbox"
)

// Ops in report order.
var Ops = []string{OpStart, OpRunPodSandbox, OpCreateContainer, OpStartContainer, OpStopRemove, OpStopPodSandbox, OpRemovePodSandbox}

// Phase names.
const (
	PhaseSequential = "sequential"
	PhaseParallel   = "parallel"
)

// TargetRatio is the target for every ratio: berth-cri / containerd
// ≤ 1.0 (latency p50 and p99, memory growth).
const TargetRatio = 1.0

// Report is everything one run measured; it is cri.json.
type Report struct {
	Mode      string     `json:"mode"` // "full" or "quick (smoke)"
	Params    Params     `json:"params"`
	Env       Env        `json:"env"`
	Runtimes  []*Runtime `json:"runtimes"` // berth-cri first, then containerd
	Ratios    []Ratio    `json:"ratios"`
	Reproduce []string   `json:"reproduce"`
	// Notes are caveats the run itself found (errors, asymmetries).
	Notes []string `json:"notes,omitempty"`
}

// Params are the sizes of the run.
type Params struct {
	Pods          int      `json:"pods"`        // per latency phase and runtime
	Concurrency   int      `json:"concurrency"` // workers in the parallel phase
	RSSPods       int      `json:"rssPods"`     // pods running when RSS is read
	Image         string   `json:"image"`
	Command       []string `json:"command"`
	SandboxImage  string   `json:"sandboxImage"`
	SettleSeconds float64  `json:"settleSeconds"` // wait before reading RSS
	RSSSamples    int      `json:"rssSamples"`    // readings 1 s apart; the median is reported
}

// Env describes the machine and the software measured.
type Env struct {
	perfnet.Host
	Containerd      string  `json:"containerd"`
	Runc            string  `json:"runc"`
	CNIPlugins      string  `json:"cniPlugins"`
	Network         string  `json:"network"`
	DurationSeconds float64 `json:"durationSeconds"`
}

// Runtime is one CRI implementation's results.
type Runtime struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Version     string   `json:"version,omitempty"` // from the CRI Version RPC
	Skipped     string   `json:"skipped,omitempty"` // why it was not measured
	Phases      []*Phase `json:"phases"`
	Memory      *Memory  `json:"memory,omitempty"`
	Errors      []string `json:"errors,omitempty"` // first few RPC errors, verbatim
	// Logs: warnings and errors the runtime's logs (berth-cri and its
	// containerd; containerd) wrote during the run.
	Logs []LogScan `json:"logs,omitempty"`
}

// Phase is one latency phase (sequential or parallel) of one runtime.
type Phase struct {
	Name        string      `json:"name"`
	Concurrency int         `json:"concurrency"`
	Pods        []PodSample `json:"pods"`
	StartWallMs float64     `json:"startWallMs"` // all starts, first RPC to last reply
	StopWallMs  float64     `json:"stopWallMs"`
	// Stats by op, over the pods whose start (and, for stop ops, stop +
	// remove) fully succeeded; filled by Finalize.
	Stats map[string]Stat `json:"stats"`
}

// PodSample is one pod's RPC times in milliseconds, as the client saw them
// (request sent to reply received); 0 for an RPC not made.
type PodSample struct {
	Index            int     `json:"index"`
	SandboxID        string  `json:"sandboxId,omitempty"`
	RunPodSandbox    float64 `json:"runPodSandboxMs"`
	CreateContainer  float64 `json:"createContainerMs"`
	StartContainer   float64 `json:"startContainerMs"`
	Start            float64 `json:"startMs"` // the three above, end to end
	StopPodSandbox   float64 `json:"stopPodSandboxMs"`
	RemovePodSandbox float64 `json:"removePodSandboxMs"`
	StopRemove       float64 `json:"stopRemoveMs"` // the two above, end to end
	StartErr         string  `json:"startErr,omitempty"`
	StopErr          string  `json:"stopErr,omitempty"`
}

// Stat summarises one op's samples in milliseconds. Percentiles are
// nearest-rank (report.Percentile): with fewer than 100 samples p99 is the
// slowest one.
type Stat struct {
	N      int     `json:"n"`
	Failed int     `json:"failed"`
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	P25    float64 `json:"p25"`
	P75    float64 `json:"p75"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

// Memory is the resident memory part for one runtime.
type Memory struct {
	Pods    int    `json:"pods"`    // pods running at the loaded reading
	Failed  int    `json:"failed"`  // pods that did not start
	Process string `json:"process"` // what was measured: berth-cri, or containerd with its CRI
	// Fresh is the runtime process right after start, before any pull.
	Fresh MemReading `json:"fresh"`
	// Baseline: images pulled, before any pod; Loaded: Pods pods running.
	Baseline MemReading `json:"baseline"`
	Loaded   MemReading `json:"loaded"`
	// Containerd is berth-cri's containerd (its CRI plugins disabled), the
	// same readings; nil for the reference, whose CRI is inside containerd.
	Containerd *ProcMem `json:"containerd,omitempty"`
	// Shims: every containerd-shim-runc-v2 of this runtime's containerd,
	// with Pods pods running. Not part of either process; for information.
	// The VmRSS sum counts shared pages once per shim, the PSS sum once.
	ShimCount  int   `json:"shimCount"`
	ShimRSSKiB int64 `json:"shimRssKiB"`
	ShimPSSKiB int64 `json:"shimPssKiB"`
}

// ProcMem is one process's readings.
type ProcMem struct {
	Fresh    MemReading `json:"fresh"`
	Baseline MemReading `json:"baseline"`
	Loaded   MemReading `json:"loaded"`
}

// MemReading is /proc/PID/status of one process in KiB: the reading with
// the median VmRSS of Samples readings one second apart.
type MemReading struct {
	VmRSSKiB   int64   `json:"vmRssKiB"`
	RssAnonKiB int64   `json:"rssAnonKiB"`
	RssFileKiB int64   `json:"rssFileKiB"`
	SamplesKiB []int64 `json:"samplesKiB,omitempty"` // every VmRSS reading
}

// GrowthKiB is Loaded - Baseline VmRSS.
func (m *Memory) GrowthKiB() int64 { return m.Loaded.VmRSSKiB - m.Baseline.VmRSSKiB }

// Ratio is berth-cri / containerd for one metric, against TargetRatio.
type Ratio struct {
	Name   string  `json:"name"`
	Berth  float64 `json:"berth"`
	Ref    float64 `json:"reference"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"` // NaN when not computable (JSON: null via Ratio.MarshalJSON)
	Target string  `json:"target"`
	Result string  `json:"result"` // "target met", "target missed", "n/a"
	Noise  string  `json:"noise,omitempty"`
}

// MarshalJSON writes NaN as null: encoding/json rejects NaN.
func (r Ratio) MarshalJSON() ([]byte, error) {
	type plain Ratio
	out := struct {
		plain
		Berth *float64 `json:"berth"`
		Ref   *float64 `json:"reference"`
		Value *float64 `json:"value"`
	}{plain: plain(r), Berth: finite(r.Berth), Ref: finite(r.Ref), Value: finite(r.Value)}
	return json.Marshal(out)
}

// UnmarshalJSON reads null back as NaN.
func (r *Ratio) UnmarshalJSON(b []byte) error {
	type plain Ratio
	in := struct {
		*plain
		Berth *float64 `json:"berth"`
		Ref   *float64 `json:"reference"`
		Value *float64 `json:"value"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	r.Berth, r.Ref, r.Value = orNaN(in.Berth), orNaN(in.Ref), orNaN(in.Value)
	return nil
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// MarshalJSON writes Stat's NaNs (no samples) as null.
func (s Stat) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"n": s.N, "failed": s.Failed, "p50": finite(s.P50), "p99": finite(s.P99), "p25": finite(s.P25),
		"p75": finite(s.P75), "min": finite(s.Min), "max": finite(s.Max), "mean": finite(s.Mean),
	})
}

// UnmarshalJSON reads Stat's nulls back as NaN.
func (s *Stat) UnmarshalJSON(b []byte) error {
	var in struct {
		N, Failed                          int
		P50, P99, P25, P75, Min, Max, Mean *float64
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*s = Stat{N: in.N, Failed: in.Failed, P50: orNaN(in.P50), P99: orNaN(in.P99), P25: orNaN(in.P25),
		P75: orNaN(in.P75), Min: orNaN(in.Min), Max: orNaN(in.Max), Mean: orNaN(in.Mean)}
	return nil
}

// value returns one op's time of a sample.
func (p PodSample) value(op string) float64 {
	switch op {
	case OpStart:
		return p.Start
	case OpRunPodSandbox:
		return p.RunPodSandbox
	case OpCreateContainer:
		return p.CreateContainer
	case OpStartContainer:
		return p.StartContainer
	case OpStopRemove:
		return p.StopRemove
	case OpStopPodSandbox:
		return p.StopPodSandbox
	case OpRemovePodSandbox:
		return p.RemovePodSandbox
	}
	return math.NaN()
}

// ComputeStats summarises a phase. A pod whose start failed counts as a
// failure of every op and is left out of all of them, so start and stop
// numbers describe the same pods; a pod whose stop + remove failed is left
// out of the stop ops only.
func ComputeStats(pods []PodSample) map[string]Stat {
	out := map[string]Stat{}
	for _, op := range Ops {
		stop := op == OpStopRemove || op == OpStopPodSandbox || op == OpRemovePodSandbox
		var xs []float64
		failed := 0
		for _, p := range pods {
			if p.StartErr != "" || stop && p.StopErr != "" {
				failed++
				continue
			}
			xs = append(xs, p.value(op))
		}
		out[op] = summarize(xs, failed)
	}
	return out
}

func summarize(xs []float64, failed int) Stat {
	s := Stat{N: len(xs), Failed: failed, P50: report.Percentile(xs, 50), P99: report.Percentile(xs, 99),
		P25: report.Percentile(xs, 25), P75: report.Percentile(xs, 75)}
	s.Min, s.Max = report.MinMax(xs)
	s.Mean = math.NaN()
	if len(xs) > 0 {
		sum := 0.0
		for _, x := range xs {
			sum += x
		}
		s.Mean = sum / float64(len(xs))
	}
	return s
}

// Runtime returns the named runtime, or nil.
func (r *Report) Runtime(name string) *Runtime {
	for _, rt := range r.Runtimes {
		if rt.Name == name {
			return rt
		}
	}
	return nil
}

// Phase returns the named phase, or nil.
func (rt *Runtime) Phase(name string) *Phase {
	if rt == nil {
		return nil
	}
	for _, p := range rt.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// stat returns a runtime's op stat in a phase; ok is false when it was not
// measured or has no samples.
func (r *Report) stat(runtime, phase, op string) (Stat, bool) {
	p := r.Runtime(runtime).Phase(phase)
	if p == nil || p.Stats == nil {
		return Stat{}, false
	}
	s, ok := p.Stats[op]
	return s, ok && s.N > 0
}

// Finalize computes every phase's stats and the ratios against the
// targets. It is idempotent, so a saved cri.json can be re-rendered.
func (r *Report) Finalize() {
	for _, rt := range r.Runtimes {
		for _, p := range rt.Phases {
			p.Stats = ComputeStats(p.Pods)
		}
	}
	r.Ratios = nil
	for _, phase := range []string{PhaseSequential, PhaseParallel} {
		for _, op := range []string{OpStart, OpStopRemove} {
			b, bok := r.stat(Berth, phase, op)
			c, cok := r.stat(Reference, phase, op)
			for _, q := range []string{"p50", "p99"} {
				ratio := Ratio{Name: fmt.Sprintf("%s %s %s", phase, op, q), Unit: "ms",
					Target: fmt.Sprintf("≤ %.2f", TargetRatio), Berth: math.NaN(), Ref: math.NaN()}
				if bok && cok {
					if q == "p50" {
						ratio.Berth, ratio.Ref = b.P50, c.P50
						ratio.Noise = iqrNoise(b, c)
					} else {
						ratio.Berth, ratio.Ref = b.P99, c.P99
						if b.N < 100 || c.N < 100 {
							ratio.Noise = "single sample: p99 of fewer than 100 is the slowest pod"
						}
					}
				}
				ratio.judge()
				r.Ratios = append(r.Ratios, ratio)
			}
		}
	}
	// Memory: what the runtime process grows by for the same pods.
	mem := Ratio{Name: "RSS growth with pods running", Unit: "MiB", Target: fmt.Sprintf("≤ %.2f", TargetRatio),
		Berth: math.NaN(), Ref: math.NaN()}
	bm, cm := r.memory(Berth), r.memory(Reference)
	if bm != nil && cm != nil {
		mem.Name = fmt.Sprintf("RSS growth with %d pods running", bm.Pods)
		mem.Berth, mem.Ref = kib2mib(bm.GrowthKiB()), kib2mib(cm.GrowthKiB())
		mem.Noise = "Go heaps: one reading can move by a few MiB with GC timing (see the samples)"
		if bm.Pods != cm.Pods {
			mem.Noise = fmt.Sprintf("pod counts differ (%d vs %d): compare with care", bm.Pods, cm.Pods)
		}
	}
	mem.judge()
	r.Ratios = append(r.Ratios, mem)
}

func (r *Report) memory(runtime string) *Memory {
	rt := r.Runtime(runtime)
	if rt == nil || rt.Skipped != "" || rt.Memory == nil || rt.Memory.Loaded.VmRSSKiB == 0 {
		return nil
	}
	return rt.Memory
}

// judge sets Value and Result. A reference value of zero or below (a
// memory growth lost in noise) gives no ratio.
func (r *Ratio) judge() {
	r.Value = math.NaN()
	if math.IsNaN(r.Berth) || math.IsNaN(r.Ref) {
		r.Result = "n/a"
		return
	}
	if r.Ref <= 0 {
		r.Result = "n/a"
		if r.Noise == "" {
			r.Noise = "reference value ≤ 0: no ratio"
		} else {
			r.Noise = "reference value ≤ 0: no ratio; " + r.Noise
		}
		return
	}
	r.Value = r.Berth / r.Ref
	if r.Value <= TargetRatio+1e-12 {
		r.Result = "target met"
	} else {
		r.Result = "target missed"
	}
}

// iqrNoise says whether the two interquartile ranges overlap: if they do,
// the medians' order could flip on a re-run.
func iqrNoise(b, c Stat) string {
	if b.P25 <= c.P75 && c.P25 <= b.P75 {
		return "within noise (interquartile ranges overlap)"
	}
	return "clear (interquartile ranges apart)"
}

func kib2mib(k int64) float64 { return float64(k) / 1024 }

// WriteOutputs writes cri.json, cri.md and the charts into dir, each via a
// temporary file and a rename so a reader never sees half a report.
func WriteOutputs(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"cri.json":      append(js, '\n'),
		"cri.md":        []byte(Markdown(r)),
		"cri-start.svg": LatencyChart(r, OpStart),
		"cri-stop.svg":  LatencyChart(r, OpStopRemove),
		"cri-rpc.svg":   RPCChart(r),
		"cri-rss.svg":   MemoryChart(r),
	}
	return report.WriteFiles(dir, files)
}

// ReadReport loads a cri.json.
func ReadReport(path string) (*Report, error) {
	return report.ReadJSON[Report](path)
}

// measured are the runtimes that were not skipped, in report order.
func (r *Report) measured() []*Runtime {
	var out []*Runtime
	for _, rt := range r.Runtimes {
		if rt.Skipped == "" {
			out = append(out, rt)
		}
	}
	return out
}

// seriesColor keeps each runtime's colour across charts.
func seriesColor(name string) string {
	if name == Berth {
		return report.PaletteColor(0)
	}
	return report.PaletteColor(1)
}

// LatencyChart: p50 and p99 of op in both phases, one bar per runtime.
func LatencyChart(r *Report, op string) []byte {
	groups := []string{"sequential p50", "sequential p99", "parallel p50", "parallel p99"}
	var series []report.Series
	for _, rt := range r.measured() {
		s := report.Series{Name: rt.Name, Color: seriesColor(rt.Name)}
		for _, ph := range []string{PhaseSequential, PhaseParallel} {
			st, ok := r.stat(rt.Name, ph, op)
			if !ok {
				s.Values = append(s.Values, math.NaN(), math.NaN())
				continue
			}
			s.Values = append(s.Values, st.P50, st.P99)
		}
		series = append(series, s)
	}
	title := "Pod start latency (RunPodSandbox + CreateContainer + StartContainer)"
	if op == OpStopRemove {
		title = "Pod stop + remove latency (StopPodSandbox + RemovePodSandbox)"
	}
	return report.Chart{
		Title:       title,
		YLabel:      "milliseconds per pod",
		Groups:      groups,
		Series:      series,
		ValueFormat: "%.0f",
		Note: fmt.Sprintf("%d pods per phase; parallel: %d at a time; lower is better; p99 of < 100 pods = slowest pod; 2-core noisy VM",
			r.Params.Pods, r.Params.Concurrency),
	}.SVG()
}

// RPCChart: p50 of each RPC in the sequential phase.
func RPCChart(r *Report) []byte {
	ops := []string{OpRunPodSandbox, OpCreateContainer, OpStartContainer, OpStopPodSandbox, OpRemovePodSandbox}
	var series []report.Series
	for _, rt := range r.measured() {
		s := report.Series{Name: rt.Name, Color: seriesColor(rt.Name)}
		for _, op := range ops {
			st, ok := r.stat(rt.Name, PhaseSequential, op)
			if !ok {
				s.Values, s.Low, s.High = append(s.Values, math.NaN()), append(s.Low, math.NaN()), append(s.High, math.NaN())
				continue
			}
			s.Values, s.Low, s.High = append(s.Values, st.P50), append(s.Low, st.P25), append(s.High, st.P75)
		}
		series = append(series, s)
	}
	return report.Chart{
		Title:       "Per-RPC latency, sequential phase, p50",
		YLabel:      "milliseconds",
		Groups:      ops,
		Series:      series,
		ValueFormat: "%.1f",
		Note:        "whiskers: p25..p75; one pod at a time; lower is better",
	}.SVG()
}

// MemoryChart: VmRSS of the runtime process before pods, with pods and the
// growth. The shims stay out: they are counted for neither runtime, and at
// hundreds of MiB they would flatten every other bar.
func MemoryChart(r *Report) []byte {
	pods := r.Params.RSSPods
	groups := []string{"before pods", fmt.Sprintf("with %d pods", pods), "growth"}
	var series []report.Series
	for _, rt := range r.measured() {
		m := rt.Memory
		name := rt.Name + " process"
		if rt.Name == Reference {
			name = "containerd (with CRI) process"
		}
		s := report.Series{Name: name, Color: seriesColor(rt.Name)}
		if m == nil || m.Loaded.VmRSSKiB == 0 {
			s.Values = []float64{math.NaN(), math.NaN(), math.NaN()}
		} else {
			s.Values = []float64{kib2mib(m.Baseline.VmRSSKiB), kib2mib(m.Loaded.VmRSSKiB), kib2mib(m.GrowthKiB())}
		}
		series = append(series, s)
		if m != nil && m.Containerd != nil && m.Loaded.VmRSSKiB != 0 {
			c := m.Containerd
			series = append(series, report.Series{Name: "berth-cri's containerd (no CRI)", Color: report.PaletteColor(2),
				Values: []float64{kib2mib(c.Baseline.VmRSSKiB), kib2mib(c.Loaded.VmRSSKiB),
					kib2mib(c.Loaded.VmRSSKiB - c.Baseline.VmRSSKiB)}})
		}
	}
	return report.Chart{
		Title:       "Resident memory (VmRSS)",
		YLabel:      "MiB",
		Groups:      groups,
		Series:      series,
		ValueFormat: "%.1f",
		Note:        "target: berth-cri growth ≤ containerd (with CRI) growth; shims are counted for neither runtime (see cri.md)",
	}.SVG()
}

// Markdown renders cri.md.
func Markdown(r *Report) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# berth-cri performance report: pod latency and memory vs containerd's CRI\n\n")
	w("> **Caveat: this is a 2-core noisy VM.** The runtimes, containerd, the shims, runc and the CNI plugins all share two vCPUs, ")
	w("so absolute numbers and ratios move from run to run. Compare the runtimes *within* one run (the sequential phase alternates them pod by pod for that), ")
	w("look at the interquartile ranges, and do not read a few percent as a regression. This is a report, not a pass/fail test: a missed target never fails the run.\n\n")
	w("Run %s (%s, took %s), %s mode: %d pods per latency phase and runtime, parallel phase %d at a time, RSS with %d pods. ",
		r.Env.Date, r.Env.Hostname, fmtDuration(r.Env.DurationSeconds), r.Mode, r.Params.Pods, r.Params.Concurrency, r.Params.RSSPods)
	w("Kernel %s, %d CPUs (%s), %s.\n\n", r.Env.Kernel, r.Env.CPUs, r.Env.CPUModel, r.Env.OS)
	w("Machine load: load average %s at start, %s at end; over the run the CPUs were %.0f%% busy in all (this run included) and %.1f%% stolen by the hypervisor. ",
		r.Env.LoadAvgStart, r.Env.LoadAvgEnd, r.Env.CPUBusyPct, r.Env.CPUStealPct)
	w("Other work on the machine during the run shows up as noise.\n\n")

	w("## Reproduce\n\n```sh\n")
	for _, l := range r.Reproduce {
		w("%s\n", l)
	}
	w("```\n\n")

	w("## Ratios vs targets\n\n")
	w("berth-cri / containerd's CRI, from this run. Targets (issue): start and stop + remove p50 and p99 ≤ 1.0× containerd's CRI; ")
	w("berth-cri's RSS growth ≤ containerd's (CRI) process growth for the same pods. ")
	w("\"noise\" for a p50 says whether the two runtimes' interquartile ranges overlap: if they do, the verdict could flip on a re-run.\n\n")
	var rows [][]string
	for _, rt := range r.Ratios {
		v := "n/a"
		if !math.IsNaN(rt.Value) {
			v = fmt.Sprintf("%.3f", rt.Value)
		}
		res := rt.Result
		if res == "target missed" {
			res = "**" + res + "**"
		}
		rows = append(rows, []string{rt.Name, num(rt.Berth, rt.Unit), num(rt.Ref, rt.Unit), v, rt.Target, res, rt.Noise})
	}
	w("%s\n", report.Table([]string{"metric", "berth-cri", "containerd", "ratio", "target", "result", "noise"}, rows))

	w("## Pod start latency\n\n")
	w("One pod = RunPodSandbox (pause sandbox + CNI ADD on the bridge network) → CreateContainer (busybox `%s`) → StartContainer, ",
		strings.Join(r.Params.Command, " "))
	w("each RPC timed by the client from request to reply, and the three end to end as \"start\". ")
	w("**Sequential**: %d pods one after the other, alternating the two runtimes pod by pod (who goes first alternates too), so both run under the same machine conditions and with the same number of pods already up. ",
		r.Params.Pods)
	w("**Parallel**: %d pods, %d workers each running pods one after the other, berth-cri's phase and then containerd's, the other runtime idle. ",
		r.Params.Pods, r.Params.Concurrency)
	w("Percentiles are nearest-rank: with fewer than 100 pods p99 is the slowest pod. Images were pulled and one warm-up pod run and removed on each runtime before timing.\n\n")
	latencyTables(w, r, []string{OpStart, OpRunPodSandbox, OpCreateContainer, OpStartContainer})
	w("![Pod start latency p50/p99, berth-cri vs containerd](cri-start.svg)\n\n")
	w("![Per-RPC latency p50, sequential phase](cri-rpc.svg)\n\n")

	w("## Stop + remove latency\n\n")
	w("StopPodSandbox (both runtimes kill the container and the sandbox and run CNI DEL) → RemovePodSandbox, timed the same way, on the pods started above, ")
	w("in the same order and with the same concurrency.\n\n")
	latencyTables(w, r, []string{OpStopRemove, OpStopPodSandbox, OpRemovePodSandbox})
	w("![Pod stop + remove latency p50/p99, berth-cri vs containerd](cri-stop.svg)\n\n")

	w("## Resident memory\n\n")
	w("VmRSS from `/proc/PID/status`: the median of %d readings one second apart, after %.0f s to settle. ",
		r.Params.RSSSamples, r.Params.SettleSeconds)
	w("\"before pods\": images pulled, no pod has run yet; then %d pods (one busybox container each) are started %d at a time and read while running. ",
		r.Params.RSSPods, r.Params.Concurrency)
	w("For berth-cri the process is berth-cri itself; its containerd (CRI plugins disabled) is reported on its own line, for honesty. ")
	w("For the reference the process is containerd, which includes its CRI. Shims (`containerd-shim-runc-v2` serving that containerd, found by their `-address`) are counted for neither; their total is given for information, ")
	w("as the sum of their VmRSS (which counts the pages all shims share once per shim) and of their PSS (`/proc/PID/smaps_rollup`, shared pages split between the sharers).\n\n")
	rows = nil
	for _, rt := range r.measured() {
		m := rt.Memory
		if m == nil || m.Loaded.VmRSSKiB == 0 {
			rows = append(rows, []string{rt.Name, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"})
			continue
		}
		proc := m.Process
		rows = append(rows, memRow(proc, m.Pods, m.Failed, m.Fresh, m.Baseline, m.Loaded,
			fmt.Sprintf("%d shims: Σ VmRSS %.1f MiB, Σ PSS %.1f MiB", m.ShimCount, kib2mib(m.ShimRSSKiB), kib2mib(m.ShimPSSKiB))))
		if c := m.Containerd; c != nil {
			rows = append(rows, memRow("berth-cri's containerd (no CRI)", m.Pods, m.Failed, c.Fresh, c.Baseline, c.Loaded, "(same shims)"))
		}
	}
	w("%s\n", report.Table([]string{"process", "fresh MiB", "before pods MiB", "with pods MiB", "growth MiB", "growth anon / file MiB", "pods (failed)", "shims with pods"}, rows))
	if bm, cm := r.memory(Berth), r.memory(Reference); bm != nil && cm != nil && bm.Containerd != nil {
		stack := bm.Loaded.VmRSSKiB + bm.Containerd.Loaded.VmRSSKiB
		w("Whole stack with %d pods (runtime + containerd, shims excluded): berth-cri + its containerd %.1f MiB vs containerd with CRI %.1f MiB; ",
			bm.Pods, kib2mib(stack), kib2mib(cm.Loaded.VmRSSKiB))
		w("growth %.1f MiB vs %.1f MiB. Stricter reading of the target (berth-cri's whole RSS ≤ containerd's growth): %.1f MiB vs %.1f MiB.\n\n",
			kib2mib(bm.GrowthKiB()+bm.Containerd.Loaded.VmRSSKiB-bm.Containerd.Baseline.VmRSSKiB), kib2mib(cm.GrowthKiB()),
			kib2mib(bm.Loaded.VmRSSKiB), kib2mib(cm.GrowthKiB()))
	}
	w("![Resident memory, berth-cri vs containerd](cri-rss.svg)\n\n")

	w("## Runtimes\n\n")
	for _, rt := range r.Runtimes {
		v := rt.Version
		if v == "" {
			v = "?"
		}
		w("- **%s** (%s): %s", rt.Name, v, rt.Description)
		if rt.Skipped != "" {
			w(" — **not measured**: %s", rt.Skipped)
		}
		w("\n")
	}
	w("\n")
	var errs []string
	for _, rt := range r.Runtimes {
		for _, e := range rt.Errors {
			errs = append(errs, fmt.Sprintf("- %s: `%s`", rt.Name, strings.ReplaceAll(e, "`", "'")))
		}
	}
	if len(errs) > 0 {
		w("## Errors\n\nFirst RPC errors per runtime, verbatim (failed pods are left out of the statistics and counted as failed):\n\n%s\n\n", strings.Join(errs, "\n"))
	}
	var logRows [][]string
	var examples []string
	for _, rt := range r.measured() {
		for _, l := range rt.Logs {
			summary := fmt.Sprintf("%d warnings, %d errors", l.Warnings, l.Errors)
			if l.Note != "" {
				summary += " (" + l.Note + ")"
			}
			if len(l.Findings) == 0 {
				logRows = append(logRows, []string{rt.Name, l.Source, summary, "", ""})
			}
			for i, f := range l.Findings {
				if i > 0 {
					summary = ""
				}
				logRows = append(logRows, []string{rt.Name, l.Source, summary, fmt.Sprintf("%d × %s", f.Count, f.Level),
					"`" + strings.ReplaceAll(f.Message, "`", "'") + "`"})
				if f.Example != "" {
					examples = append(examples, f.Example)
				}
			}
		}
	}
	if len(logRows) > 0 {
		w("## Warnings and errors in the logs\n\n")
		w("Lines above info that each runtime's logs got from the start of the daemons to the end of the measurement (before the cleanups), most frequent first. ")
		w("berth-cri logs a failed CRI request as a warning (error for Internal/Unknown), containerd logs at info.\n\n")
		w("%s\n", report.Table([]string{"runtime", "log", "total", "count", "message"}, logRows))
		if len(examples) > 0 {
			w("The first line of each, verbatim:\n\n```\n%s\n```\n\n", strings.Join(examples, "\n"))
		}
	}
	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}

	w("## Environment\n\n")
	w("%s\n", report.Table([]string{"what", "value"}, append(r.Env.Rows(), [][]string{
		{"containerd", r.Env.Containerd},
		{"runc", r.Env.Runc},
		{"CNI plugins", r.Env.CNIPlugins},
		{"network", r.Env.Network},
		{"image", fmt.Sprintf("`%s`, command `%s`; sandbox image `%s`", r.Params.Image, strings.Join(r.Params.Command, " "), r.Params.SandboxImage)},
		{"Go", r.Env.GoVersion},
		{"berth commit", r.Env.GitCommit},
		{"load average (start / end)", r.Env.LoadAvgStart + " / " + r.Env.LoadAvgEnd},
	}...)))
	return b.String()
}

func memRow(proc string, pods, failed int, fresh, base, loaded MemReading, shims string) []string {
	lo, hi := report.MinMax(i64s(loaded.SamplesKiB))
	withPods := fmt.Sprintf("%.1f", kib2mib(loaded.VmRSSKiB))
	if len(loaded.SamplesKiB) > 1 {
		withPods += fmt.Sprintf(" (%.1f–%.1f)", lo/1024, hi/1024)
	}
	return []string{proc, fmt.Sprintf("%.1f", kib2mib(fresh.VmRSSKiB)), fmt.Sprintf("%.1f", kib2mib(base.VmRSSKiB)), withPods,
		fmt.Sprintf("%+.1f", kib2mib(loaded.VmRSSKiB-base.VmRSSKiB)),
		fmt.Sprintf("%+.1f / %+.1f", kib2mib(loaded.RssAnonKiB-base.RssAnonKiB), kib2mib(loaded.RssFileKiB-base.RssFileKiB)),
		fmt.Sprintf("%d (%d)", pods, failed), shims}
}

func i64s(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

// latencyTables writes one table per phase: p50, p99, p25–p75, min–max,
// mean of each op for both runtimes.
func latencyTables(w func(string, ...any), r *Report, ops []string) {
	for _, phase := range []string{PhaseSequential, PhaseParallel} {
		var rows [][]string
		var wall []string
		label := ""
		for _, rt := range r.measured() {
			p := rt.Phase(phase)
			if p == nil {
				continue
			}
			for _, op := range ops {
				s := p.Stats[op]
				if s.N == 0 {
					rows = append(rows, []string{rt.Name, op, "n/a", "n/a", "n/a", "n/a", "n/a", fmt.Sprintf("0 (%d)", s.Failed)})
					continue
				}
				rows = append(rows, []string{rt.Name, "`" + op + "`", f1(s.P50), f1(s.P99),
					f1(s.P25) + "–" + f1(s.P75), f1(s.Min) + "–" + f1(s.Max), f1(s.Mean), fmt.Sprintf("%d (%d)", s.N, s.Failed)})
			}
			wallMs := p.StartWallMs
			if ops[0] == OpStopRemove {
				wallMs = p.StopWallMs
			}
			if wallMs > 0 {
				wall = append(wall, fmt.Sprintf("%s %.1f s (%.1f pods/s)", rt.Name, wallMs/1000, float64(len(p.Pods))/(wallMs/1000)))
			}
			label = "Wall time for all pods"
			if p.Concurrency <= 1 {
				// Interleaved with the other runtime: the sum of this
				// runtime's own pod times, not the phase's wall clock.
				label = "Sum of each runtime's own pod times"
			}
		}
		if len(rows) == 0 {
			continue
		}
		conc := 1
		if p := r.Runtime(Reference).Phase(phase); p != nil {
			conc = p.Concurrency
		}
		w("**%s** (%d at a time), milliseconds:\n\n", phase, conc)
		w("%s\n", report.Table([]string{"runtime", "op", "p50", "p99", "p25–p75", "min–max", "mean", "pods (failed)"}, rows))
		if len(wall) > 0 {
			w("%s: %s.\n\n", label, strings.Join(wall, "; "))
		}
	}
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v)
}

func num(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

func fmtDuration(s float64) string {
	if s <= 0 {
		return "?"
	}
	m := int(s) / 60
	return fmt.Sprintf("%dm%02ds", m, int(s)%60)
}
