// Package kindperf is berth's in-cluster performance suite: iperf3, fio and
// pod start latency inside the kind cluster that runs on berth (berth-cri,
// berth-cni, berth-csi; context kind-berth), each figure a ratio to the
// reference cluster (containerd's CRI, the reference bridge, host-local and
// bandwidth plugins, hostPath storage; context kind-ref) or to a hostPath
// volume on the same node, measured in the same run.
//
// The measurement is TestKindPerf (kindperf_test.go): it needs both
// clusters and the tools image, so it only runs with BERTH_KIND_PERF=1
// (hack/perf-kind.sh, the fifth suite of make perf). This file and
// markdown.go are the pure part, unit-tested without a cluster: the result
// types, the summaries and ratios, and the JSON, Markdown and SVG outputs.
package kindperf

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/berthdev/berth/test/perf/csifio"
	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// Cluster roles, as they appear in the report.
const (
	Berth = "berth"
	Ref   = "reference"
)

// Network cases of the throughput matrix, in report order: the reference
// first, since every berth figure is divided by it.
const (
	NetRef          = "ref-bridge"    // reference cluster, bridge + host-local
	NetBerthVXLAN   = "berth-vxlan"   // berth cluster, default network
	NetBerthMacvlan = "berth-macvlan" // berth cluster, berth.dev/network: berth-macvlan
)

// NetNames in report order.
var NetNames = []string{NetRef, NetBerthVXLAN, NetBerthMacvlan}

// Placements of the client relative to the iperf3 server.
const (
	SameNode  = "same node"
	CrossNode = "cross node"
)

// Placements in report order.
var Placements = []string{SameNode, CrossNode}

// fio targets: the berth-csi PVC and the hostPath volume beside it.
const (
	FioBerth    = "berth-csi"
	FioHostPath = "hostPath"
)

// Pod start modes.
const (
	StartSequential = "sequential"
	StartBurst      = "burst"
)

// Parts of the suite, selectable with KIND_PERF_PARTS.
const (
	PartNet      = "net"
	PartShaped   = "shaped"
	PartFio      = "fio"
	PartPodStart = "podstart"
)

// AllParts in run order.
var AllParts = []string{PartNet, PartShaped, PartFio, PartPodStart}

// Params are the sizes of one run.
type Params struct {
	Parts        []string `json:"parts"`
	IperfSeconds int      `json:"iperfSeconds"` // per iperf3 run
	Repeats      int      `json:"repeats"`      // iperf3 runs per case
	Streams      []int    `json:"streams"`      // -P of the throughput matrix
	// Shaped cases: kubernetes.io/egress-bandwidth on the client pod.
	ShapedRates   []string `json:"shapedRates"`
	ShapedStreams []int    `json:"shapedStreams"`
	// Ping under load: one echo every PingIntervalMs, from one second
	// into the iperf3 run until one second before its end.
	PingIntervalMs int `json:"pingIntervalMs"`
	IdlePings      int `json:"idlePings"` // echoes before the load, per sample
	// fio: the CSI suite's job set and parameters.
	Fio      csifio.Params `json:"fio"`
	PVCBytes int64         `json:"pvcBytes"`
	// StorageClass of the PVC (berth-csi's default class).
	StorageClass string `json:"storageClass"`
	// Pod start: Pods pods per cluster and mode.
	Pods int `json:"pods"`
}

// Has reports whether part is selected.
func (p Params) Has(part string) bool {
	for _, x := range p.Parts {
		if x == part {
			return true
		}
	}
	return false
}

// Report is everything one run measured; it is kind.json.
type Report struct {
	Mode      string   `json:"mode"` // "full" or "quick (smoke)"
	Params    Params   `json:"params"`
	Env       Env      `json:"env"`
	Reproduce []string `json:"reproduce"`

	Throughput []*NetCase `json:"throughput"`
	// MTU of eth0 in each network's server pod.
	MTU      map[string]int `json:"mtu,omitempty"`
	Shaped   []*ShapedCase  `json:"shaped"`
	Fio      *FioPart       `json:"fio,omitempty"`
	PodStart []*PodStartSet `json:"podStart"`

	// Filled by Finalize.
	Ratios []Ratio `json:"ratios"`
	// Notes are caveats the run itself found (skips, fallbacks).
	Notes []string `json:"notes,omitempty"`
}

// Env describes the machine, the clusters and the tools measured.
type Env struct {
	perfnet.Host
	Clusters        []ClusterEnv `json:"clusters"`
	ToolsImage      string       `json:"toolsImage"`
	Iperf3          string       `json:"iperf3,omitempty"` // version inside the tools image
	Fio             string       `json:"fio,omitempty"`
	Ping            string       `json:"ping,omitempty"`
	DurationSeconds float64      `json:"durationSeconds"`
}

// ClusterEnv describes one kind cluster.
type ClusterEnv struct {
	Role          string    `json:"role"` // Berth or Ref
	Context       string    `json:"context"`
	ServerVersion string    `json:"serverVersion"`
	NodeImage     string    `json:"nodeImage,omitempty"` // the kind node image (docker inspect)
	NodeImageID   string    `json:"nodeImageId,omitempty"`
	Nodes         []NodeEnv `json:"nodes"`
	// DaemonSets in kube-system and berth-system, with their images: what
	// wires the pods (berth-netd, kube-proxy, ...).
	DaemonSets []string `json:"daemonSets,omitempty"`
	// Networks are the CNI network names on the first worker
	// (/etc/cni/net.d), berth-cri's choices for berth.dev/network.
	Networks []string `json:"networks,omitempty"`
}

// NodeEnv is one node's status.nodeInfo.
type NodeEnv struct {
	Name       string `json:"name"`
	Kubelet    string `json:"kubelet"`
	Runtime    string `json:"runtime"`
	OSImage    string `json:"osImage"`
	Kernel     string `json:"kernel"`
	InternalIP string `json:"internalIP,omitempty"`
}

// IperfSample is one iperf3 run (perfnet's record of it).
type IperfSample = perfnet.IperfSample

// NetCase is one cell of the throughput matrix: a network, a placement and
// a stream count.
type NetCase struct {
	Net       string        `json:"net"`
	Cluster   string        `json:"cluster"`
	Placement string        `json:"placement"`
	Streams   int           `json:"streams"`
	Server    string        `json:"server,omitempty"` // pod@node (IP)
	Client    string        `json:"client,omitempty"`
	Samples   []IperfSample `json:"samples"`
	Skipped   string        `json:"skipped,omitempty"`
	// Filled by Finalize.
	MedianGbps *float64 `json:"medianGbps"`
	MinGbps    *float64 `json:"minGbps"`
	MaxGbps    *float64 `json:"maxGbps"`
	Errors     int      `json:"errors"`
}

// Key names the cell in ratios and charts.
func (c *NetCase) Key() string { return fmt.Sprintf("%s P%d", c.Placement, c.Streams) }

// ShapedSample is one iperf3 run from a shaped pod with pings beside it.
type ShapedSample struct {
	Repeat int     `json:"repeat"`
	Order  int     `json:"order"`
	Mbps   float64 `json:"mbps"` // receiver side, whole run
	// LateMbps: receiver side over the second half of the run (the
	// server's intervals), after a shaper's burst allowance is spent.
	LateMbps *float64 `json:"lateMbps,omitempty"`
	// RTTms are the echo times under load, IdleRTTms before it.
	RTTms       []float64 `json:"rttMs"`
	PingSent    int       `json:"pingSent"`
	PingLost    int       `json:"pingLost"`
	IdleRTTms   []float64 `json:"idleRttMs,omitempty"`
	Retransmits int       `json:"retransmits"`
	Error       string    `json:"error,omitempty"`
}

// ShapedCase is one shaped pod: a cluster, a rate and a stream count.
type ShapedCase struct {
	Cluster    string         `json:"cluster"`
	Rate       string         `json:"rate"` // the annotation's value
	RateMbps   float64        `json:"rateMbps"`
	Streams    int            `json:"streams"`
	Annotation string         `json:"annotation"`
	Server     string         `json:"server,omitempty"`
	Client     string         `json:"client,omitempty"`
	Samples    []ShapedSample `json:"samples"`
	Skipped    string         `json:"skipped,omitempty"`
	// Filled by Finalize.
	MedianMbps *float64 `json:"medianMbps"`
	MinMbps    *float64 `json:"minMbps"`
	MaxMbps    *float64 `json:"maxMbps"`
	Accuracy   *float64 `json:"accuracy"` // median ÷ rate
	LateMedian *float64 `json:"lateMedianMbps"`
	LateAcc    *float64 `json:"lateAccuracy"` // LateMedian ÷ rate
	RTTp50     *float64 `json:"rttP50Ms"`     // over every echo of every sample
	RTTp99     *float64 `json:"rttP99Ms"`
	IdleP50    *float64 `json:"idleRttP50Ms"`
	LossPct    *float64 `json:"lossPct"`
	Errors     int      `json:"errors"`
}

// Key names the case in ratios and charts.
func (c *ShapedCase) Key() string { return fmt.Sprintf("%s P%d", c.Rate, c.Streams) }

// FioPart is the storage comparison on one node of the berth cluster.
type FioPart struct {
	Node     string       `json:"node"`
	IOEngine string       `json:"ioengine"`
	Targets  []FioTarget  `json:"targets"`
	Jobs     []csifio.Job `json:"jobs"`
	Samples  []FioSample  `json:"samples"`
	Summary  []FioSummary `json:"summary"` // filled by Finalize
	Skipped  string       `json:"skipped,omitempty"`
	// Backing: per target, the node directory its bytes land in and that
	// directory's filesystem (source, type) on the node.
	Backing map[string]string `json:"backing,omitempty"`
}

// FioTarget is one of the two volumes fio runs on, in the same pod.
type FioTarget struct {
	Name        string `json:"name"`
	Path        string `json:"path"` // mount point in the pod
	Description string `json:"description"`
	Mount       string `json:"mount,omitempty"` // its /proc/self/mountinfo line in the pod
}

// FioSample is one fio run of one job on one target.
type FioSample struct {
	Job    string `json:"job"`
	Target string `json:"target"`
	Repeat int    `json:"repeat"`
	csifio.FioResult
	Error string `json:"error,omitempty"`
}

// Value is the sample's figure in the job's unit (MiB/s or IOPS).
func (s FioSample) Value(j csifio.Job) float64 {
	if s.Error != "" {
		return math.NaN()
	}
	return s.FioResult.In(j.Unit)
}

// FioSummary is one target's figures for one job.
type FioSummary struct {
	Job       string   `json:"job"`
	Target    string   `json:"target"`
	Unit      string   `json:"unit"`
	N         int      `json:"n"`
	Failed    int      `json:"failed"`
	Median    *float64 `json:"median"` // in Unit; null when no run succeeded
	Min       *float64 `json:"min"`
	Max       *float64 `json:"max"`
	ClatP99Us *float64 `json:"clatP99Us"` // median over the repeats
}

// PodStartSet is one cluster's pod start latencies in one mode.
type PodStartSet struct {
	Cluster string `json:"cluster"`
	Mode    string `json:"mode"`
	Pods    int    `json:"pods"`
	// Pod records, in creation order.
	Records []PodStart `json:"records"`
	// WallMs: burst only, from the first create call to the last Ready.
	WallMs  float64 `json:"wallMs,omitempty"`
	Skipped string  `json:"skipped,omitempty"`
	// Filled by Finalize.
	P50ms  *float64 `json:"p50Ms"`
	P99ms  *float64 `json:"p99Ms"`
	MinMs  *float64 `json:"minMs"`
	MaxMs  *float64 `json:"maxMs"`
	Errors int      `json:"errors"`
}

// PodStart is one pod: from the create call to the watch event that shows
// it Ready, on this machine's clock.
type PodStart struct {
	Name  string  `json:"name"`
	Node  string  `json:"node,omitempty"`
	Ms    float64 `json:"ms"`
	Order int     `json:"order"`
	Error string  `json:"error,omitempty"`
}

// Ratio is one berth figure divided by its reference.
type Ratio struct {
	Part    string  `json:"part"`    // PartNet, ...
	Measure string  `json:"measure"` // "berth-vxlan ÷ ref-bridge, cross node P4 throughput"
	Berth   float64 `json:"berth"`
	Ref     float64 `json:"ref"`
	Unit    string  `json:"unit"`
	Ratio   float64 `json:"ratio"`
	// Better says which way is good: "higher" or "lower".
	Better string `json:"better"`
	// Noise is set when the min–max ranges of the two overlap.
	Noise string `json:"noise,omitempty"`
}

// MarshalJSON writes NaN as null: encoding/json refuses NaN.
func (r Ratio) MarshalJSON() ([]byte, error) {
	type plain struct {
		Part    string   `json:"part"`
		Measure string   `json:"measure"`
		Berth   *float64 `json:"berth"`
		Ref     *float64 `json:"ref"`
		Unit    string   `json:"unit"`
		Ratio   *float64 `json:"ratio"`
		Better  string   `json:"better"`
		Noise   string   `json:"noise,omitempty"`
	}
	return json.Marshal(plain{r.Part, r.Measure, perfnet.FPtr(r.Berth), perfnet.FPtr(r.Ref), r.Unit,
		perfnet.FPtr(r.Ratio), r.Better, r.Noise})
}

// UnmarshalJSON reads null back as NaN.
func (r *Ratio) UnmarshalJSON(b []byte) error {
	var p struct {
		Part    string   `json:"part"`
		Measure string   `json:"measure"`
		Berth   *float64 `json:"berth"`
		Ref     *float64 `json:"ref"`
		Unit    string   `json:"unit"`
		Ratio   *float64 `json:"ratio"`
		Better  string   `json:"better"`
		Noise   string   `json:"noise,omitempty"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*r = Ratio{Part: p.Part, Measure: p.Measure, Berth: perfnet.Val(p.Berth), Ref: perfnet.Val(p.Ref),
		Unit: p.Unit, Ratio: perfnet.Val(p.Ratio), Better: p.Better, Noise: p.Noise}
	return nil
}

// Net returns the throughput cell, or nil.
func (r *Report) Net(net, placement string, streams int) *NetCase {
	for _, c := range r.Throughput {
		if c.Net == net && c.Placement == placement && c.Streams == streams {
			return c
		}
	}
	return nil
}

// ShapedOf returns the shaped case, or nil.
func (r *Report) ShapedOf(cluster, rate string, streams int) *ShapedCase {
	for _, c := range r.Shaped {
		if c.Cluster == cluster && c.Rate == rate && c.Streams == streams {
			return c
		}
	}
	return nil
}

// PodStartOf returns the pod start set, or nil.
func (r *Report) PodStartOf(cluster, mode string) *PodStartSet {
	for _, s := range r.PodStart {
		if s.Cluster == cluster && s.Mode == mode {
			return s
		}
	}
	return nil
}

// Finalize computes every summary and ratio from the samples. It is
// idempotent, so a saved kind.json can be re-rendered.
func (r *Report) Finalize() {
	r.Ratios = nil
	for _, c := range r.Throughput {
		var xs []float64
		c.Errors = 0
		for _, s := range c.Samples {
			if s.Error != "" {
				c.Errors++
				continue
			}
			xs = append(xs, s.Gbps)
		}
		lo, hi := report.MinMax(xs)
		c.MedianGbps, c.MinGbps, c.MaxGbps = perfnet.FPtr(report.Median(xs)), perfnet.FPtr(lo), perfnet.FPtr(hi)
	}
	for _, c := range r.Shaped {
		var xs, late, rtt, idle []float64
		sent, lost := 0, 0
		c.Errors = 0
		for _, s := range c.Samples {
			if s.Error != "" {
				c.Errors++
				continue
			}
			xs = append(xs, s.Mbps)
			if s.LateMbps != nil {
				late = append(late, *s.LateMbps)
			}
			rtt = append(rtt, s.RTTms...)
			idle = append(idle, s.IdleRTTms...)
			sent += s.PingSent
			lost += s.PingLost
		}
		lo, hi := report.MinMax(xs)
		med := report.Median(xs)
		c.MedianMbps, c.MinMbps, c.MaxMbps = perfnet.FPtr(med), perfnet.FPtr(lo), perfnet.FPtr(hi)
		c.Accuracy = perfnet.FPtr(med / c.RateMbps)
		lm := report.Median(late)
		c.LateMedian, c.LateAcc = perfnet.FPtr(lm), perfnet.FPtr(lm/c.RateMbps)
		c.RTTp50, c.RTTp99 = perfnet.FPtr(report.Percentile(rtt, 50)), perfnet.FPtr(report.Percentile(rtt, 99))
		c.IdleP50 = perfnet.FPtr(report.Percentile(idle, 50))
		c.LossPct = nil
		if sent > 0 {
			c.LossPct = perfnet.FPtr(100 * float64(lost) / float64(sent))
		}
	}
	if f := r.Fio; f != nil {
		f.Summary = nil
		for _, j := range f.Jobs {
			for _, t := range f.Targets {
				s := FioSummary{Job: j.ID, Target: t.Name, Unit: j.Unit}
				var vals, p99 []float64
				for _, smp := range f.Samples {
					if smp.Job != j.ID || smp.Target != t.Name {
						continue
					}
					if smp.Error != "" {
						s.Failed++
						continue
					}
					vals = append(vals, smp.Value(j))
					p99 = append(p99, smp.ClatP99Us)
				}
				s.N = len(vals)
				lo, hi := report.MinMax(vals)
				s.Median, s.Min, s.Max = perfnet.FPtr(report.Median(vals)), perfnet.FPtr(lo), perfnet.FPtr(hi)
				s.ClatP99Us = perfnet.FPtr(report.Median(p99))
				f.Summary = append(f.Summary, s)
			}
		}
	}
	for _, s := range r.PodStart {
		var xs []float64
		s.Errors = 0
		for _, p := range s.Records {
			if p.Error != "" {
				s.Errors++
				continue
			}
			xs = append(xs, p.Ms)
		}
		lo, hi := report.MinMax(xs)
		s.P50ms, s.P99ms = perfnet.FPtr(report.Percentile(xs, 50)), perfnet.FPtr(report.Percentile(xs, 99))
		s.MinMs, s.MaxMs = perfnet.FPtr(lo), perfnet.FPtr(hi)
	}
	r.ratios()
}

// ratios lists every berth ÷ reference figure, in report order.
func (r *Report) ratios() {
	add := func(ra Ratio) {
		ra.Ratio = report.Ratio(ra.Berth, ra.Ref)
		r.Ratios = append(r.Ratios, ra)
	}
	for _, net := range []string{NetBerthVXLAN, NetBerthMacvlan} {
		for _, pl := range Placements {
			for _, st := range r.Params.Streams {
				b, ref := r.Net(net, pl, st), r.Net(NetRef, pl, st)
				if b == nil || ref == nil {
					continue
				}
				add(Ratio{Part: PartNet, Measure: fmt.Sprintf("%s ÷ %s, %s P%d throughput", net, NetRef, pl, st),
					Berth: perfnet.Val(b.MedianGbps), Ref: perfnet.Val(ref.MedianGbps), Unit: "Gbit/s", Better: "higher",
					Noise: overlap(b.MinGbps, b.MaxGbps, ref.MinGbps, ref.MaxGbps)})
			}
		}
	}
	for _, rate := range r.Params.ShapedRates {
		for _, st := range r.Params.ShapedStreams {
			b, ref := r.ShapedOf(Berth, rate, st), r.ShapedOf(Ref, rate, st)
			if b == nil || ref == nil {
				continue
			}
			add(Ratio{Part: PartShaped, Measure: fmt.Sprintf("shaped %s P%d achieved rate", rate, st),
				Berth: perfnet.Val(b.MedianMbps), Ref: perfnet.Val(ref.MedianMbps), Unit: "Mbit/s", Better: "closer to the rate",
				Noise: overlap(b.MinMbps, b.MaxMbps, ref.MinMbps, ref.MaxMbps)})
			add(Ratio{Part: PartShaped, Measure: fmt.Sprintf("shaped %s P%d achieved rate, second half", rate, st),
				Berth: perfnet.Val(b.LateMedian), Ref: perfnet.Val(ref.LateMedian), Unit: "Mbit/s", Better: "closer to the rate"})
			add(Ratio{Part: PartShaped, Measure: fmt.Sprintf("shaped %s P%d RTT p50 under load", rate, st),
				Berth: perfnet.Val(b.RTTp50), Ref: perfnet.Val(ref.RTTp50), Unit: "ms", Better: "lower"})
			add(Ratio{Part: PartShaped, Measure: fmt.Sprintf("shaped %s P%d RTT p99 under load", rate, st),
				Berth: perfnet.Val(b.RTTp99), Ref: perfnet.Val(ref.RTTp99), Unit: "ms", Better: "lower"})
		}
	}
	if f := r.Fio; f != nil {
		for _, j := range f.Jobs {
			b, bok := f.summary(j.ID, FioBerth)
			h, hok := f.summary(j.ID, FioHostPath)
			if !bok && !hok {
				continue
			}
			ra := Ratio{Part: PartFio, Measure: fmt.Sprintf("fio %s, %s ÷ %s", j.ID, FioBerth, FioHostPath),
				Berth: math.NaN(), Ref: math.NaN(), Unit: j.Unit, Better: "higher"}
			if bok {
				ra.Berth = perfnet.Val(b.Median)
			}
			if hok {
				ra.Ref = perfnet.Val(h.Median)
			}
			if bok && hok {
				ra.Noise = overlap(b.Min, b.Max, h.Min, h.Max)
			}
			add(ra)
		}
	}
	for _, mode := range []string{StartSequential, StartBurst} {
		b, ref := r.PodStartOf(Berth, mode), r.PodStartOf(Ref, mode)
		if b == nil || ref == nil {
			continue
		}
		add(Ratio{Part: PartPodStart, Measure: fmt.Sprintf("pod start %s p50", mode),
			Berth: perfnet.Val(b.P50ms), Ref: perfnet.Val(ref.P50ms), Unit: "ms", Better: "lower"})
		add(Ratio{Part: PartPodStart, Measure: fmt.Sprintf("pod start %s p99", mode),
			Berth: perfnet.Val(b.P99ms), Ref: perfnet.Val(ref.P99ms), Unit: "ms", Better: "lower"})
	}
}

func (f *FioPart) summary(job, target string) (FioSummary, bool) {
	for _, s := range f.Summary {
		if s.Job == job && s.Target == target {
			return s, s.N > 0
		}
	}
	return FioSummary{}, false
}

// overlap says whether two min–max ranges overlap (the difference is
// within the run-to-run spread), "" when either is missing or a single
// sample.
func overlap(alo, ahi, blo, bhi *float64) string {
	if alo == nil || ahi == nil || blo == nil || bhi == nil {
		return ""
	}
	if *alo == *ahi && *blo == *bhi {
		return ""
	}
	if *alo <= *bhi && *blo <= *ahi {
		return "ranges overlap"
	}
	return ""
}

// Load reads a saved kind.json.
func Load(path string) (*Report, error) {
	return report.ReadJSON[Report](path)
}

// Files renders kind.json, kind.md and the charts.
func Files(r *Report) (map[string][]byte, error) {
	r.Finalize()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"kind.json": append(js, '\n'),
		"kind.md":   []byte(Markdown(r)),
	}
	for name, svg := range Charts(r) {
		files[name] = svg
	}
	return files, nil
}
