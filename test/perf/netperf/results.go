package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// netReport is net.json.
type netReport struct {
	Schema      string           `json:"schema"`
	Command     string           `json:"command"`
	Reproduce   string           `json:"reproduce"`
	Started     time.Time        `json:"started"`
	Finished    time.Time        `json:"finished"`
	Interrupted bool             `json:"interrupted"`
	Machine     machineInfo      `json:"machine"`
	Params      params           `json:"params"`
	Throughput  []*caseResult    `json:"throughput"`
	Ratios      []ratio          `json:"ratios"`
	CNILatency  []*latencyResult `json:"cniLatency"`
	LatRatios   []ratio          `json:"cniLatencyRatios"`
	Cleanup     []string         `json:"cleanupProblems"`
	Notes       []string         `json:"notes"`
}

type params struct {
	Duration     string `json:"duration"`
	Repeats      int    `json:"repeats"`
	Streams      []int  `json:"streams"`
	CNICalls     int    `json:"cniCalls"`
	Quick        bool   `json:"quick"`
	Interleaving string `json:"interleaving"`
	Metric       string `json:"metric"`
}

type caseResult struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Kind        string          `json:"kind"` // baseline, reference, berth
	Status      string          `json:"status"`
	Error       string          `json:"error,omitempty"`
	Port        int             `json:"port"`
	Endpoints   *endpoints      `json:"endpoints,omitempty"`
	Streams     []*streamResult `json:"results"`
	serverLog   string
}

type streamResult = perfnet.StreamResult

// ratio compares two medians against a target.
type ratio struct {
	Name        string   `json:"name"`
	Metric      string   `json:"metric"`
	Numerator   string   `json:"numerator"`
	Denominator string   `json:"denominator"`
	Value       *float64 `json:"value"`
	Target      string   `json:"target"`
	Result      string   `json:"result"` // "target met", "target missed", "n/a"
	Noise       string   `json:"noise,omitempty"`
	Reason      string   `json:"reason,omitempty"`
}

func newReport(ctx context.Context, h *harness, args []string, t0 time.Time) *netReport {
	o := h.opts
	shown := displayArgs(args)
	r := &netReport{
		Schema:    "berth-netperf/v1",
		Command:   strings.TrimSpace("go run ./test/perf/netperf " + quoteArgs(shown)),
		Reproduce: strings.TrimSpace("sudo hack/perf-net.sh " + quoteArgs(shown)),
		Started:   t0,
		Params: params{
			Duration: o.duration.String(), Repeats: o.repeats, Streams: o.streams, CNICalls: o.cniCalls, Quick: o.quick,
			Interleaving: "each repeat runs every case once per stream count, cases round-robin with a rotating start (ABCABC...), never all-of-A then all-of-B",
			Metric:       "iperf3 -J end.sum_received.bits_per_second (receiver side), TCP, median over repeats",
		},
		Notes: []string{
			"2-core noisy VM: iperf3 client, server, softirq work and the kernel share two vCPUs, so absolute numbers and small ratios move by several percent run to run; compare cases of the same run, not across runs.",
			"Every sample of every case runs in the same process, interleaved; a ratio's 'noise' column says whether the two cases' sample ranges overlap.",
			"Topologies are network namespaces on one kernel: macvlan masters and vxlan underlays are veth pairs, so 'wire' speed is memory bandwidth, not a NIC.",
		},
	}
	r.Machine = perfnet.CollectMachine(ctx, t0, perfnet.MachineOpts{
		Iperf3: o.iperf3, RefPlugin: h.refPlugin("macvlan"), RefName: "reference macvlan plugin",
		BerthFlag: o.berthBin, Berth: h.berth, BerthErr: h.berthErr,
	})
	return r
}

// finish computes medians and ratios.
func (r *netReport) finish(t time.Time) {
	r.Finished = t
	r.Machine.End()
	for _, c := range r.Throughput {
		for _, s := range c.Streams {
			xs := s.Gbps()
			lo, hi := report.MinMax(xs)
			s.MedianGbps, s.MinGbps, s.MaxGbps = fptr(report.Median(xs)), fptr(lo), fptr(hi)
		}
	}
	r.Ratios = nil
	for _, def := range []struct {
		num, den string
		op       string
		target   float64
	}{
		{"macvlan-berth", "macvlan-ref", ">=", 0.95},
		{"macvlan-berth", "veth-raw", ">=", 0.8},
		{"vxlan-berth", "vxlan-flannel-like", ">=", 1.0},
	} {
		for _, st := range r.Params.Streams {
			r.Ratios = append(r.Ratios, r.throughputRatio(def.num, def.den, st, def.op, def.target))
		}
	}
	r.LatRatios = nil
	var ref, brt *latencyResult
	for _, l := range r.CNILatency {
		switch l.Plugin {
		case "ref":
			ref = l
		case "berth":
			brt = l
		}
	}
	if ref != nil || brt != nil {
		get := func(l *latencyResult, f func(*latencyResult) *float64) *float64 {
			if l == nil {
				return nil
			}
			return f(l)
		}
		for _, m := range []struct {
			name string
			f    func(*latencyResult) *float64
		}{
			{"ADD p50", func(l *latencyResult) *float64 { return l.AddP50 }},
			{"ADD p99", func(l *latencyResult) *float64 { return l.AddP99 }},
			{"DEL p50", func(l *latencyResult) *float64 { return l.DelP50 }},
			{"DEL p99", func(l *latencyResult) *float64 { return l.DelP99 }},
		} {
			rt := ratio{Name: "berth / ref " + m.name, Metric: m.name + " latency", Numerator: "berth macvlan", Denominator: "ref macvlan+host-local", Target: "<= 1.00"}
			n, d := get(brt, m.f), get(ref, m.f)
			if n == nil || d == nil || *d == 0 {
				rt.Result, rt.Reason = "n/a", "missing data (see the latency table)"
			} else {
				v := *n / *d
				rt.Value = &v
				rt.Result = verdict(v <= 1.0+1e-9)
			}
			r.LatRatios = append(r.LatRatios, rt)
		}
	}
}

func (r *netReport) find(name string, streams int) (*caseResult, *streamResult) {
	for _, c := range r.Throughput {
		if c.Name == name {
			for _, s := range c.Streams {
				if s.Streams == streams {
					return c, s
				}
			}
			return c, nil
		}
	}
	return nil, nil
}

func (r *netReport) throughputRatio(num, den string, streams int, op string, target float64) ratio {
	rt := ratio{
		Name: fmt.Sprintf("%s / %s", num, den), Metric: fmt.Sprintf("P%d median throughput", streams),
		Numerator: num, Denominator: den, Target: fmt.Sprintf("%s %.2f", op, target),
	}
	nc, ns := r.find(num, streams)
	dc, ds := r.find(den, streams)
	switch {
	case nc == nil || dc == nil:
		rt.Result, rt.Reason = "n/a", "case not run (--cases)"
		return rt
	case nc.Status != "ok":
		rt.Result, rt.Reason = "n/a", nc.Name+" "+nc.Status
		return rt
	case dc.Status != "ok":
		rt.Result, rt.Reason = "n/a", dc.Name+" "+dc.Status
		return rt
	case ns == nil || ds == nil || ns.MedianGbps == nil || ds.MedianGbps == nil || *ds.MedianGbps == 0:
		rt.Result, rt.Reason = "n/a", "no successful samples"
		return rt
	}
	v := *ns.MedianGbps / *ds.MedianGbps
	rt.Value = &v
	rt.Result = verdict(v >= target-1e-9)
	// Is the verdict clear of the noise? Compare the numerator's sample
	// range with target x the denominator's range.
	if len(ns.Gbps()) >= 2 && len(ds.Gbps()) >= 2 {
		nlo, nhi := *ns.MinGbps, *ns.MaxGbps
		dlo, dhi := target**ds.MinGbps, target**ds.MaxGbps
		if nhi < dlo || nlo > dhi {
			rt.Noise = "clear (sample ranges do not overlap)"
		} else {
			rt.Noise = "within noise (sample ranges overlap)"
		}
	} else {
		rt.Noise = "single sample: no noise estimate"
	}
	return rt
}

// referenceFailed is true when a baseline or reference case (not berth)
// failed: then the harness or machine, not berth, is at fault.
func (r *netReport) referenceFailed() bool {
	for _, c := range r.Throughput {
		if c.Kind != "berth" && c.Status != "ok" {
			return true
		}
	}
	for _, l := range r.CNILatency {
		if l.Plugin == "ref" && l.Status != "ok" {
			return true
		}
	}
	return false
}
