// Package csifio is berth-csi's storage performance suite: fio throughput
// and IOPS on a berth-csi volume, compared in the same run with the native
// backing directory (the ceiling) and with go-fuse's plain loopback without
// passthrough (a typical FUSE driver), plus the node plugin's memory per
// mounted volume.
//
// The measurement is TestCSIFio (csifio_test.go): it needs root, FUSE and
// fio, so it only runs with BERTH_PERF_CSI=1 (hack/perf-csi.sh, make perf).
// This file is the pure part, unit-tested without root: the result types,
// the ratios against the targets and the JSON, Markdown and SVG
// outputs.
package csifio

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/berthdev/berth/test/perf/crilat"
	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// Target names, as they appear in the report.
const (
	Native = "native"
	Berth  = "berth-csi"
	Anchor = "fuse-loopback"
)

// TargetNames in report order.
var TargetNames = []string{Native, Berth, Anchor}

// Targets of the issue for berth-csi ÷ native, by job class.
var classTarget = map[string]float64{
	ClassSequential: 0.90,
	ClassRandRead:   0.85,
	ClassRandWrite:  0.50,
}

// ClassTarget is the berth ÷ native target of a job class.
func ClassTarget(class string) float64 { return classTarget[class] }

// AnchorThreshold and AnchorFactor: where the plain-FUSE anchor reaches
// less than AnchorThreshold of native, berth-csi must also reach at least
// AnchorFactor times the anchor.
const (
	AnchorThreshold = 0.6
	AnchorFactor    = 1.5
)

// Report is everything one run measured; it is csi.json.
type Report struct {
	Mode      string      `json:"mode"` // "full" or "quick (smoke)"
	Params    Params      `json:"params"`
	Env       Env         `json:"env"`
	Targets   []*Target   `json:"targets"` // native, berth-csi, fuse-loopback
	Jobs      []Job       `json:"jobs"`
	Samples   []Sample    `json:"samples"` // every fio run, in run order
	Summary   []Summary   `json:"summary"` // per job and target; filled by Finalize
	Ratios    []Ratio     `json:"ratios"`  // per job; filled by Finalize
	Memory    *Memory     `json:"memory,omitempty"`
	Anchor    AnchorCheck `json:"anchor"`
	Reproduce []string    `json:"reproduce"`
	// Notes are caveats the run itself found.
	Notes []string `json:"notes,omitempty"`
}

// Params are the sizes of the run.
type Params struct {
	FileBytes      int64  `json:"fileBytes"`      // the fio file on each target
	VolumeBytes    int64  `json:"volumeBytes"`    // the berth-csi volume's capacity
	RuntimeSeconds int    `json:"runtimeSeconds"` // per fio run
	Repeats        int    `json:"repeats"`        // runs per job and target
	IOEngine       string `json:"ioengine"`
	IODepth        int    `json:"iodepth"`
	RSSVolumes     int    `json:"rssVolumes"`     // volumes staged for the memory reading
	RSSVolumeBytes int64  `json:"rssVolumeBytes"` // their capacity
	SettleSeconds  int    `json:"settleSeconds"`  // wait before reading RSS
	RSSSamples     int    `json:"rssSamples"`     // readings 1 s apart; the median is reported
}

// Env describes the machine and the software measured.
type Env struct {
	perfnet.Host
	Fio             string   `json:"fio"`
	GoFuseBerth     string   `json:"goFuseBerth"`  // go-fuse in the berth-csi binary measured
	GoFuseAnchor    string   `json:"goFuseAnchor"` // go-fuse serving the anchor (this test binary)
	BackingFS       string   `json:"backingFs"`    // filesystem of the native dir and berth-csi's root
	BackingDevice   string   `json:"backingDevice,omitempty"`
	BerthMount      string   `json:"berthMount,omitempty"`  // the volume's mount as /proc/self/mountinfo shows it
	AnchorMount     string   `json:"anchorMount,omitempty"` // the anchor's
	BerthArgs       []string `json:"berthArgs,omitempty"`
	CSIWorkTree     string   `json:"csiWorkTree,omitempty"` // uncommitted changes under csi/ and cmd/berth-csi when measured
	DurationSeconds float64  `json:"durationSeconds"`
}

// Target is one of the three places fio runs.
type Target struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Dir         string `json:"dir,omitempty"`
	Skipped     string `json:"skipped,omitempty"` // why it was not measured
}

// Sample is one fio run of one job on one target.
type Sample struct {
	Job    string `json:"job"`
	Target string `json:"target"`
	Repeat int    `json:"repeat"`
	FioResult
	// FUSEReadBytes / FUSEWrittenBytes: bytes berth-csi's FUSE server
	// itself read and wrote for the volume during the run (its metrics;
	// passthrough reads bypass the server). Berth-csi samples only.
	FUSEReadBytes    *float64 `json:"fuseReadBytes,omitempty"`
	FUSEWrittenBytes *float64 `json:"fuseWrittenBytes,omitempty"`
	// DeviceReadBytes / DeviceWrittenBytes: what the backing block device
	// read and wrote during the run (/sys/class/block/DEV/stat; anything
	// else on the machine using the disk is counted too). A buffered read
	// run that reads far less than its ioBytes ran from the page cache.
	DeviceReadBytes    int64  `json:"deviceReadBytes"`
	DeviceWrittenBytes int64  `json:"deviceWrittenBytes"`
	Error              string `json:"error,omitempty"`
}

// Value is the sample's figure in the job's unit.
func (s Sample) Value(j Job) float64 {
	if s.Error != "" {
		return math.NaN()
	}
	return s.FioResult.In(j.Unit)
}

// Summary is one target's figures for one job over its repeats.
type Summary struct {
	Job       string  `json:"job"`
	Target    string  `json:"target"`
	N         int     `json:"n"`
	Failed    int     `json:"failed"`
	Median    float64 `json:"median"` // in the job's unit
	Min       float64 `json:"min"`
	Max       float64 `json:"max"`
	ClatP99Us float64 `json:"clatP99Us"` // median over the repeats
	MiBps     float64 `json:"mibps"`     // median bandwidth, whatever the unit
	// FUSE server bytes per second of runtime, berth-csi only (median).
	FUSEReadMiBps    float64 `json:"fuseReadMiBps"`
	FUSEWrittenMiBps float64 `json:"fuseWrittenMiBps"`
	// Median share of the run's I/O that the block device read (reads)
	// or wrote (writes): near 1 = device-bound, near 0 = page cache.
	DeviceShare float64 `json:"deviceShare"`
}

// Ratio is one job's comparison against the targets.
type Ratio struct {
	Job          string  `json:"job"`
	Class        string  `json:"class"`
	Unit         string  `json:"unit"`
	Native       float64 `json:"native"`
	Berth        float64 `json:"berth"`
	Anchor       float64 `json:"anchor"`
	BerthNative  float64 `json:"berthNative"`  // berth-csi ÷ native
	AnchorNative float64 `json:"anchorNative"` // anchor ÷ native
	BerthAnchor  float64 `json:"berthAnchor"`  // berth-csi ÷ anchor
	Target       float64 `json:"target"`       // for berth ÷ native
	// AnchorRule: the anchor is below AnchorThreshold of native, so berth
	// ÷ anchor must be ≥ AnchorFactor too.
	AnchorRule bool   `json:"anchorRule"`
	Result     string `json:"result"` // "target met", "target missed", "n/a"
	Why        string `json:"why,omitempty"`
	Noise      string `json:"noise,omitempty"`
}

// Memory is the node plugin's resident memory with 0 and N volumes.
type Memory struct {
	PID      int               `json:"pid"`
	Volumes  int               `json:"volumes"`  // staged and published
	Baseline crilat.MemReading `json:"baseline"` // no volume
	Loaded   crilat.MemReading `json:"loaded"`   // Volumes volumes
	// PeakKiB is VmHWM at the end of the run (after the fio runs), for
	// information.
	PeakKiB int64 `json:"peakKiB,omitempty"`
}

// PerVolumeKiB is (loaded - baseline) / volumes.
func (m *Memory) PerVolumeKiB() float64 {
	if m == nil || m.Volumes == 0 || m.Loaded.VmRSSKiB == 0 {
		return math.NaN()
	}
	return float64(m.Loaded.VmRSSKiB-m.Baseline.VmRSSKiB) / float64(m.Volumes)
}

// AnchorCheck is the evidence that the anchor ran without passthrough.
type AnchorCheck struct {
	Options        string `json:"options"`        // the go-fuse options it was mounted with
	InitFlags      string `json:"initFlags"`      // the INIT reply of a probe mount with the same options
	PassthroughOff bool   `json:"passthroughOff"` // the kernel refused a backing fd on the anchor's connection
	Check          string `json:"check"`
	Control        string `json:"control"` // the same call on a mount that allows passthrough
}

// Job returns the named job.
func (r *Report) Job(id string) (Job, bool) {
	for _, j := range r.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return Job{}, false
}

// Target returns the named target, or nil.
func (r *Report) Target(name string) *Target {
	for _, t := range r.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func (r *Report) summary(job, target string) (Summary, bool) {
	for _, s := range r.Summary {
		if s.Job == job && s.Target == target {
			return s, s.N > 0
		}
	}
	return Summary{}, false
}

// Finalize computes the summaries and ratios from the samples. It is
// idempotent, so a saved csi.json can be re-rendered.
func (r *Report) Finalize() {
	r.Summary, r.Ratios = nil, nil
	for _, j := range r.Jobs {
		for _, name := range TargetNames {
			s := Summary{Job: j.ID, Target: name}
			var vals, p99, mib, fr, fw, dev []float64
			for _, smp := range r.Samples {
				if smp.Job != j.ID || smp.Target != name {
					continue
				}
				if smp.Error != "" {
					s.Failed++
					continue
				}
				vals = append(vals, smp.Value(j))
				p99 = append(p99, smp.ClatP99Us)
				mib = append(mib, smp.BWBytes/(1<<20))
				if smp.IOBytes > 0 {
					d := smp.DeviceWrittenBytes
					if j.Reads() {
						d = smp.DeviceReadBytes
					}
					dev = append(dev, float64(d)/float64(smp.IOBytes))
				}
				if smp.FUSEReadBytes != nil && smp.FUSEWrittenBytes != nil && smp.RuntimeMs > 0 {
					sec := float64(smp.RuntimeMs) / 1000
					fr = append(fr, *smp.FUSEReadBytes/(1<<20)/sec)
					fw = append(fw, *smp.FUSEWrittenBytes/(1<<20)/sec)
				}
			}
			s.N = len(vals)
			s.Median = report.Median(vals)
			s.Min, s.Max = report.MinMax(vals)
			s.ClatP99Us = report.Median(p99)
			s.MiBps = report.Median(mib)
			s.FUSEReadMiBps, s.FUSEWrittenMiBps = report.Median(fr), report.Median(fw)
			s.DeviceShare = report.Median(dev)
			r.Summary = append(r.Summary, s)
		}
		r.Ratios = append(r.Ratios, r.ratio(j))
	}
}

func (r *Report) ratio(j Job) Ratio {
	ra := Ratio{Job: j.ID, Class: j.Class, Unit: j.Unit, Target: ClassTarget(j.Class),
		Native: math.NaN(), Berth: math.NaN(), Anchor: math.NaN(),
		BerthNative: math.NaN(), AnchorNative: math.NaN(), BerthAnchor: math.NaN()}
	n, nok := r.summary(j.ID, Native)
	b, bok := r.summary(j.ID, Berth)
	a, aok := r.summary(j.ID, Anchor)
	if nok {
		ra.Native = n.Median
	}
	if bok {
		ra.Berth = b.Median
	}
	if aok {
		ra.Anchor = a.Median
	}
	ra.BerthNative = report.Ratio(ra.Berth, ra.Native)
	ra.AnchorNative = report.Ratio(ra.Anchor, ra.Native)
	ra.BerthAnchor = report.Ratio(ra.Berth, ra.Anchor)
	ra.judge()
	if nok && bok && (n.N > 1 || b.N > 1) {
		ra.Noise = rangeNoise(n, b)
	} else if nok && bok {
		ra.Noise = "one sample each"
	}
	return ra
}

// judge sets Result and Why: berth ÷ native must reach the class target
// and, where the anchor is below AnchorThreshold of native, berth ÷ anchor
// must reach AnchorFactor.
func (ra *Ratio) judge() {
	if math.IsNaN(ra.BerthNative) {
		ra.Result, ra.Why = "n/a", "berth-csi or native not measured"
		return
	}
	var missed []string
	if ra.BerthNative+1e-12 < ra.Target {
		missed = append(missed, fmt.Sprintf("berth ÷ native %.2f < %.2f", ra.BerthNative, ra.Target))
	}
	switch {
	case math.IsNaN(ra.AnchorNative):
		ra.Why = "anchor not measured: its rule is unchecked"
	case ra.AnchorNative < AnchorThreshold:
		ra.AnchorRule = true
		if ra.BerthAnchor+1e-12 < AnchorFactor {
			missed = append(missed, fmt.Sprintf("berth ÷ anchor %.2f < %.1f (anchor ÷ native %.2f < %.1f)",
				ra.BerthAnchor, AnchorFactor, ra.AnchorNative, AnchorThreshold))
		}
	}
	if len(missed) > 0 {
		ra.Result, ra.Why = "target missed", strings.Join(missed, "; ")
		return
	}
	ra.Result = "target met"
}

// rangeNoise says whether berth's and native's min–max ranges overlap.
func rangeNoise(n, b Summary) string {
	if n.Min <= b.Max && b.Min <= n.Max {
		return "ranges overlap"
	}
	return "ranges apart"
}

// ReadReport loads a csi.json.
func ReadReport(path string) (*Report, error) {
	return report.ReadJSON[Report](path)
}

// WriteOutputs writes csi.json, csi.md and the charts into dir, each via a
// temporary file and a rename so a reader never sees half a report.
func WriteOutputs(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(nanToNull(r), "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"csi.json":       append(js, '\n'),
		"csi.md":         []byte(Markdown(r)),
		"csi-ratio.svg":  RatioChart(r),
		"csi-seq.svg":    ValueChart(r, "MiB/s"),
		"csi-random.svg": ValueChart(r, "IOPS"),
		"csi-rss.svg":    MemoryChart(r),
	}
	return report.WriteFiles(dir, files)
}

// nanToNull turns the report into a JSON tree with NaN written as null
// (encoding/json rejects NaN); ReadReport reads null back as 0, and
// Finalize recomputes every derived NaN from the samples.
func nanToNull(r *Report) any {
	// Marshal through a float-sanitizing copy: summaries and ratios are
	// the only places NaN occurs, and both are derived.
	type alias Report
	c := alias(*r)
	c.Summary = make([]Summary, len(r.Summary))
	for i, s := range r.Summary {
		s.Median, s.Min, s.Max, s.ClatP99Us, s.MiBps = z(s.Median), z(s.Min), z(s.Max), z(s.ClatP99Us), z(s.MiBps)
		s.FUSEReadMiBps, s.FUSEWrittenMiBps, s.DeviceShare = z(s.FUSEReadMiBps), z(s.FUSEWrittenMiBps), z(s.DeviceShare)
		c.Summary[i] = s
	}
	c.Ratios = make([]Ratio, len(r.Ratios))
	for i, ra := range r.Ratios {
		ra.Native, ra.Berth, ra.Anchor = z(ra.Native), z(ra.Berth), z(ra.Anchor)
		ra.BerthNative, ra.AnchorNative, ra.BerthAnchor = z(ra.BerthNative), z(ra.AnchorNative), z(ra.BerthAnchor)
		c.Ratios[i] = ra
	}
	return c
}

// z maps NaN and ±Inf to 0 for JSON; a 0 median means "not measured"
// (Summary.N says so too).
func z(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// measured are the targets that were not skipped, in report order.
func (r *Report) measured() []*Target {
	var out []*Target
	for _, name := range TargetNames {
		if t := r.Target(name); t != nil && t.Skipped == "" {
			out = append(out, t)
		}
	}
	return out
}

// seriesColor keeps each target's colour across charts.
func seriesColor(name string) string {
	switch name {
	case Berth:
		return report.PaletteColor(0)
	case Anchor:
		return report.PaletteColor(1)
	}
	return report.PaletteColor(2)
}

// Label is a target's name in charts and tables.
func Label(name string) string {
	switch name {
	case Anchor:
		return "go-fuse loopback (no passthrough)"
	case Native:
		return "native dir"
	}
	return name
}

// RatioChart: berth-csi ÷ native and anchor ÷ native per job, with the
// targets as reference lines.
func RatioChart(r *Report) []byte {
	var groups []string
	bs := report.Series{Name: "berth-csi ÷ native", Color: seriesColor(Berth)}
	as := report.Series{Name: "go-fuse loopback ÷ native", Color: seriesColor(Anchor)}
	for _, ra := range r.Ratios {
		groups = append(groups, ra.Job)
		bs.Values = append(bs.Values, ra.BerthNative)
		as.Values = append(as.Values, ra.AnchorNative)
	}
	return report.Chart{
		Title:  "fio on a berth-csi volume and on plain FUSE, relative to the native directory",
		YLabel: "× native (higher is better)",
		Groups: groups,
		Series: []report.Series{bs, as},
		Lines: []report.HLine{{Value: 1, Label: "native"}, {Value: 0.90, Label: "seq target 0.90"},
			{Value: 0.85, Label: "rand read 0.85"}, {Value: 0.50, Label: "rand write 0.50"}},
		YMax: 1.6,
		Note: fmt.Sprintf("median of %d × %d s fio runs per job and target, %s QD%d, %s file; 2-core noisy VM",
			r.Params.Repeats, r.Params.RuntimeSeconds, r.Params.IOEngine, r.Params.IODepth, bytesLabel(r.Params.FileBytes)),
	}.SVG()
}

// ValueChart: the absolute figures of the jobs in unit ("MiB/s" for the
// sequential jobs, "IOPS" for the random ones), min–max whiskers.
func ValueChart(r *Report, unit string) []byte {
	var jobs []Job
	for _, j := range r.Jobs {
		if j.Unit == unit {
			jobs = append(jobs, j)
		}
	}
	var groups []string
	for _, j := range jobs {
		groups = append(groups, j.ID)
	}
	// IOPS are charted in thousands, so the labels over the bars stay
	// narrower than the bars.
	scale := 1.0
	if unit == "IOPS" {
		scale = 1000
	}
	var series []report.Series
	others := 0.0
	top := 0.0
	for _, t := range r.measured() {
		s := report.Series{Name: Label(t.Name), Color: seriesColor(t.Name)}
		for _, j := range jobs {
			sm, ok := r.summary(j.ID, t.Name)
			if !ok {
				s.Values, s.Low, s.High = append(s.Values, math.NaN()), append(s.Low, math.NaN()), append(s.High, math.NaN())
				continue
			}
			sm.Median, sm.Min, sm.Max = sm.Median/scale, sm.Min/scale, sm.Max/scale
			s.Values, s.Low, s.High = append(s.Values, sm.Median), append(s.Low, sm.Min), append(s.High, sm.Max)
			top = math.Max(top, sm.Max)
			if t.Name != Native {
				others = math.Max(others, sm.Max)
			}
		}
		series = append(series, s)
	}
	// Native buffered writes go to the page cache at memory speed; when
	// they dwarf the FUSE bars, cut the axis (the labels keep the values).
	ymax := 0.0
	if others > 0 && top > 4*others {
		ymax = 2 * others
	}
	title, ylabel, format := fmt.Sprintf("Sequential 1 MiB at QD%d: throughput", r.Params.IODepth), "MiB/s", "%.0f"
	if unit == "IOPS" {
		title, ylabel, format = fmt.Sprintf("Random 4 KiB at QD%d: IOPS", r.Params.IODepth), "thousand IOPS", "%.1f"
	}
	note := fmt.Sprintf("median of %d runs, whiskers min–max; higher is better", r.Params.Repeats)
	if ymax > 0 {
		note += "; axis cut: bars with a break run off the chart (label = value)"
	}
	return report.Chart{Title: title, YLabel: ylabel, Groups: groups, Series: series, ValueFormat: format, YMax: ymax, Note: note}.SVG()
}

// MemoryChart: berth-csi's VmRSS with no volume and with N volumes.
func MemoryChart(r *Report) []byte {
	m := r.Memory
	groups := []string{"no volume", "with N volumes"}
	s := report.Series{Name: "berth-csi node plugin VmRSS", Color: seriesColor(Berth), Values: []float64{math.NaN(), math.NaN()}}
	note := "not measured"
	if m != nil && m.Loaded.VmRSSKiB > 0 {
		groups[1] = fmt.Sprintf("with %d volumes", m.Volumes)
		s.Values = []float64{kib2mib(m.Baseline.VmRSSKiB), kib2mib(m.Loaded.VmRSSKiB)}
		lo0, hi0 := report.MinMax(i64s(m.Baseline.SamplesKiB))
		lo1, hi1 := report.MinMax(i64s(m.Loaded.SamplesKiB))
		s.Low, s.High = []float64{lo0 / 1024, lo1 / 1024}, []float64{hi0 / 1024, hi1 / 1024}
		note = fmt.Sprintf("per mounted volume: %.0f KiB ((rss%d − rss0) / %d); median of %d readings, whiskers min–max",
			m.PerVolumeKiB(), m.Volumes, m.Volumes, r.Params.RSSSamples)
	}
	return report.Chart{Title: "berth-csi resident memory per mounted volume", YLabel: "MiB", Groups: groups,
		Series: []report.Series{s}, ValueFormat: "%.1f", Note: note}.SVG()
}

func kib2mib(k int64) float64 { return float64(k) / 1024 }

func i64s(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

func bytesLabel(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}
