package kindperf

import (
	"fmt"
	"math"
	"strings"

	"github.com/berthdev/berth/test/perf/csifio"
	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// Markdown renders kind.md.
func Markdown(r *Report) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p := r.Params
	w("# berth in a kind cluster: in-cluster performance report\n\n")
	w("> **Caveat: both kind clusters share one 2-core VM** with each other and with whatever else runs on it. ")
	w("iperf3's two ends, the node agents of six kind nodes and two control planes compete for the same two CPUs, so absolute figures are low and move from run to run. ")
	w("Every berth figure is divided by its reference **measured in the same run**, interleaved case by case; compare within this report, not across runs, and mind the min–max ranges. ")
	w("This is a report, not a test: nothing here fails the run.\n\n")
	w("Run %s (%s, took %s), %s mode. Host kernel %s, %d CPUs (%s), %s. ",
		r.Env.Date, r.Env.Hostname, fmtDuration(r.Env.DurationSeconds), r.Mode, r.Env.Kernel, r.Env.CPUs, r.Env.CPUModel, r.Env.OS)
	w("Machine load: load average %s at start, %s at end; over the run the CPUs were %.0f%% busy in all (this run included) and %.1f%% stolen by the hypervisor.\n\n",
		r.Env.LoadAvgStart, r.Env.LoadAvgEnd, r.Env.CPUBusyPct, r.Env.CPUStealPct)

	w("## Reproduce\n\n```sh\n")
	for _, l := range r.Reproduce {
		w("%s\n", l)
	}
	w("```\n\n")

	w("## Summary\n\n")
	w("The headline figures, in the shape of the README's benchmark tables (pairs are P1 / P4, buffered / O_DIRECT or p50 / p99 as the row says).\n\n")
	w("%s\n", SummaryTable(r))

	w("## Every ratio\n\n")
	w("berth ÷ reference, each pair measured in this run. The reference is the `ref` kind cluster (containerd's own CRI, ")
	w("the reference bridge + host-local + bandwidth plugins) for networking and pod start, and a hostPath volume in the same pod on the same node for fio. ")
	w("\"noise\" marks pairs whose min–max ranges over the repeats overlap.\n\n")
	var rows [][]string
	for _, ra := range r.Ratios {
		rows = append(rows, []string{ra.Measure, num(ra.Berth), num(ra.Ref), ra.Unit, f2(ra.Ratio), ra.Better, ra.Noise})
	}
	if len(rows) == 0 {
		w("No pair was measured.\n\n")
	} else {
		w("%s\n", report.Table([]string{"measure", "berth", "reference", "unit", "ratio", "better", "noise"}, rows))
	}

	if p.Has(PartNet) {
		w("## Pod-to-pod throughput (iperf3 TCP)\n\n")
		w("`iperf3 -c SERVER -t %d -P N -J` from a client pod to a server pod (`iperf3 -s`), the client on the server's node (same node) or on the other worker (cross node); ",
			p.IperfSeconds)
		w("median Gbit/s of the receiver side (`end.sum_received`) over %d run(s), min–max in brackets. ", p.Repeats)
		w("Networks: **%s** = the reference cluster's bridge (cross-node traffic routed through the kind network by per-node routes); ", NetRef)
		w("**%s** = berth's default network (VXLAN between nodes); **%s** = berth's macvlan network (pod annotation `berth.dev/network: berth-macvlan`).", NetBerthVXLAN, NetBerthMacvlan)
		if len(r.MTU) > 0 {
			var ms []string
			for _, n := range NetNames {
				if m, ok := r.MTU[n]; ok {
					ms = append(ms, fmt.Sprintf("%s %d", n, m))
				}
			}
			w(" Pod MTU (eth0 of the server pod): %s.", strings.Join(ms, ", "))
		}
		w("\n\n")
		rows = nil
		for _, pl := range Placements {
			for _, st := range p.Streams {
				row := []string{fmt.Sprintf("%s P%d", pl, st)}
				for _, n := range NetNames {
					row = append(row, gbpsCell(r.Net(n, pl, st)))
				}
				for _, n := range []string{NetBerthVXLAN, NetBerthMacvlan} {
					b, ref := r.Net(n, pl, st), r.Net(NetRef, pl, st)
					if b == nil || ref == nil {
						row = append(row, "n/a")
						continue
					}
					row = append(row, f2(report.Ratio(perfnet.Val(b.MedianGbps), perfnet.Val(ref.MedianGbps))))
				}
				rows = append(rows, row)
			}
		}
		w("%s\n", report.Table([]string{"case", NetRef + " Gbit/s", NetBerthVXLAN + " Gbit/s", NetBerthMacvlan + " Gbit/s",
			"vxlan ÷ ref", "macvlan ÷ ref"}, rows))
		w("![pod-to-pod throughput](kind.svg)\n\n")
		skips(&b, r.Throughput)
	}

	if p.Has(PartShaped) {
		w("## Shaped pods: achieved rate and RTT under load\n\n")
		w("The client pod carries `kubernetes.io/egress-bandwidth` (berth: its eBPF dataplane; reference: the bandwidth plugin, TBF on an ifb device) and sends to an unshaped server on the other worker ")
		w("(`iperf3 -t %d -P N`, median of %d run(s), receiver side, whole run including TCP's start). ", p.IperfSeconds, p.Repeats)
		w("While it runs, the same pod pings the server every %d ms from the second second to one second before the end (`ping -n -i %.2f`): ", p.PingIntervalMs, float64(p.PingIntervalMs)/1000)
		w("its echoes leave through the same shaped egress as the bulk flow, so their RTT shows the queue the shaper builds. ")
		w("p50/p99 over every echo of every run; idle p50 from %d echoes before each run. ", p.IdlePings)
		w("\"second half\" is the receiver's rate over the last half of the run (the server's own intervals, `--get-server-output`): ")
		w("containerd's CRI hands the bandwidth plugin a burst of 2³²−1 bits (about 512 MiB) for an annotation without one, ")
		w("so the reference lets that much through at line rate before it shapes, and a short run's whole-run average is mostly burst.\n\n")
		rows = nil
		for _, rate := range p.ShapedRates {
			for _, st := range p.ShapedStreams {
				for _, cl := range []string{Ref, Berth} {
					c := r.ShapedOf(cl, rate, st)
					if c == nil {
						continue
					}
					if c.Skipped != "" {
						rows = append(rows, []string{fmt.Sprintf("%s P%d", rate, st), cl, "skipped: " + c.Skipped})
						continue
					}
					rows = append(rows, []string{fmt.Sprintf("%s P%d", rate, st), cl,
						rangeCell(c.MedianMbps, c.MinMbps, c.MaxMbps, "%.1f"), pf(c.Accuracy, "%.3f"),
						pf(c.LateMedian, "%.1f"), pf(c.LateAcc, "%.3f"),
						pf(c.IdleP50, "%.3f"), pf(c.RTTp50, "%.2f"), pf(c.RTTp99, "%.2f"), pf(c.LossPct, "%.1f")})
				}
			}
		}
		w("%s\n", report.Table([]string{"rate", "cluster", "achieved Mbit/s", "achieved ÷ rate", "second half Mbit/s", "second half ÷ rate", "idle RTT p50 ms", "RTT p50 ms under load", "RTT p99 ms under load", "ping loss %"}, rows))
		w("![achieved ÷ configured rate](kind-shaped.svg)\n\n")
		w("![RTT under load](kind-rtt.svg)\n\n")
		for _, c := range r.Shaped {
			for _, s := range c.Samples {
				if s.Error != "" {
					w("- %s %s P%d run %d failed: `%s`\n", c.Cluster, c.Rate, c.Streams, s.Repeat+1, tick(s.Error))
				}
			}
		}
		w("\n")
	}

	if p.Has(PartFio) {
		w("## fio: berth-csi PVC vs hostPath on the same node\n\n")
		f := r.Fio
		switch {
		case f == nil:
			w("Not measured.\n\n")
		case f.Skipped != "":
			w("Not measured: %s\n\n", f.Skipped)
		default:
			fp := p.Fio
			w("One pod on %s mounts both volumes; fio runs in it, the CSI suite's job set (test/perf/csifio): ", f.Node)
			w("`--ioengine=%s --iodepth=%d --numjobs=1 --time_based --runtime=%d --size=%s --fallocate=none --invalidate=0`, buffered and `--direct=1`, ",
				f.IOEngine, fp.IODepth, fp.RuntimeSeconds, bytesLabel(fp.FileBytes))
			w("%d run(s) per job and target, the two targets alternating which goes first. Read jobs lay their file out first (sequential write + fsync, untimed); ", fp.Repeats)
			w("before every run the host syncs and drops the page cache (`echo 3 > /proc/sys/vm/drop_caches`: the kind nodes share the host's kernel). ")
			w("Sequential jobs compare MiB/s, random jobs IOPS. The CSI suite's targets (berth-csi ÷ native directory on the host) are shown for context: hostPath is the in-cluster native directory.\n\n")
			rows = nil
			for _, j := range f.Jobs {
				h, _ := f.summary(j.ID, FioHostPath)
				bs, _ := f.summary(j.ID, FioBerth)
				rows = append(rows, []string{j.ID, j.Unit,
					rangeCell(h.Median, h.Min, h.Max, "%.0f"), rangeCell(bs.Median, bs.Min, bs.Max, "%.0f"),
					f2(report.Ratio(perfnet.Val(bs.Median), perfnet.Val(h.Median))), fmt.Sprintf("≥ %.2f", csifio.ClassTarget(j.Class)),
					pf(h.ClatP99Us, "%.0f"), pf(bs.ClatP99Us, "%.0f")})
			}
			w("%s\n", report.Table([]string{"job", "unit", FioHostPath, FioBerth, "berth-csi ÷ hostPath", "CSI issue target (÷ native)", "clat p99 µs hostPath", "clat p99 µs berth-csi"}, rows))
			w("![berth-csi ÷ hostPath](kind-fio.svg)\n\n")
			for _, t := range f.Targets {
				w("- **%s** at `%s`: %s", t.Name, t.Path, t.Description)
				if t.Mount != "" {
					w(" Mount in the pod: `%s`.", tick(t.Mount))
				}
				if b := f.Backing[t.Name]; b != "" {
					w(" On the node: `%s`.", tick(b))
				}
				w("\n")
			}
			for _, s := range f.Samples {
				if s.Error != "" {
					w("- %s on %s run %d failed: `%s`\n", s.Job, s.Target, s.Repeat+1, tick(s.Error))
				}
			}
			w("\n")
		}
	}

	if p.Has(PartPodStart) {
		w("## Pod start latency\n\n")
		w("%d pods per cluster and mode (busybox `sleep`, preloaded in both node images, scheduled on the two workers): ", p.Pods)
		w("from the client's create call to the watch event that shows the pod Ready, on this machine's clock (the API's own timestamps have one-second resolution). ")
		w("**sequential**: one pod at a time, the clusters alternating pod by pod; **burst**: all %d created at once in one cluster, then in the other. ", p.Pods)
		w("Pods are deleted between modes.\n\n")
		rows = nil
		for _, mode := range []string{StartSequential, StartBurst} {
			for _, cl := range []string{Ref, Berth} {
				s := r.PodStartOf(cl, mode)
				if s == nil {
					continue
				}
				if s.Skipped != "" {
					rows = append(rows, []string{mode, cl, "skipped: " + s.Skipped})
					continue
				}
				wall := ""
				if s.WallMs > 0 {
					wall = fmt.Sprintf("%.0f", s.WallMs)
				}
				rows = append(rows, []string{mode, cl, fmt.Sprintf("%d (%d failed)", len(s.Records)-s.Errors, s.Errors),
					pf(s.P50ms, "%.0f"), pf(s.P99ms, "%.0f"), pf(s.MinMs, "%.0f"), pf(s.MaxMs, "%.0f"), wall})
			}
		}
		w("%s\n", report.Table([]string{"mode", "cluster", "pods", "p50 ms", "p99 ms", "min ms", "max ms", "burst wall ms"}, rows))
		w("![pod start latency](kind-podstart.svg)\n\n")
		for _, s := range r.PodStart {
			for _, pr := range s.Records {
				if pr.Error != "" {
					w("- %s %s %s: `%s`\n", s.Cluster, s.Mode, pr.Name, tick(pr.Error))
				}
			}
		}
		w("\n")
	}

	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}

	w("## Environment\n\n")
	env := append(r.Env.Rows(), [][]string{
		{"berth commit", r.Env.GitCommit},
		{"tools image", "`" + r.Env.ToolsImage + "`"},
		{"iperf3 / fio / ping (in the image)", strings.Join(nonEmpty(r.Env.Iperf3, r.Env.Fio, r.Env.Ping), " / ")},
		{"Go (suite)", r.Env.GoVersion},
		{"load average (start / end)", r.Env.LoadAvgStart + " / " + r.Env.LoadAvgEnd},
	}...)
	w("%s\n", report.Table([]string{"what", "value"}, env))
	for _, c := range r.Env.Clusters {
		w("**%s cluster** (context `%s`): Kubernetes %s, node image `%s`", c.Role, c.Context, c.ServerVersion, c.NodeImage)
		if c.NodeImageID != "" {
			w(" (%s)", shortID(c.NodeImageID))
		}
		w(".")
		if len(c.Networks) > 0 {
			w(" CNI networks on the workers: %s.", strings.Join(c.Networks, ", "))
		}
		w("\n\n")
		rows = nil
		for _, n := range c.Nodes {
			rows = append(rows, []string{n.Name, n.InternalIP, n.Kubelet, n.Runtime, n.OSImage, n.Kernel})
		}
		w("%s\n", report.Table([]string{"node", "address", "kubelet", "container runtime", "OS image", "kernel"}, rows))
		if len(c.DaemonSets) > 0 {
			w("DaemonSets: %s.\n\n", strings.Join(c.DaemonSets, "; "))
		}
	}
	return b.String()
}

func skips(b *strings.Builder, cases []*NetCase) {
	seen := map[string]bool{}
	for _, c := range cases {
		if c.Skipped != "" && !seen[c.Net+c.Skipped] {
			seen[c.Net+c.Skipped] = true
			fmt.Fprintf(b, "- **%s skipped**: %s\n", c.Net, c.Skipped)
		}
		for _, s := range c.Samples {
			if s.Error != "" {
				fmt.Fprintf(b, "- %s %s run %d failed: `%s`\n", c.Net, c.Key(), s.Repeat+1, tick(s.Error))
			}
		}
	}
	b.WriteString("\n")
}

func gbpsCell(c *NetCase) string {
	if c == nil {
		return "n/a"
	}
	if c.Skipped != "" {
		return "skipped"
	}
	return rangeCell(c.MedianGbps, c.MinGbps, c.MaxGbps, "%.2f")
}

// rangeCell is "median (min–max)", or the median alone when they agree.
func rangeCell(med, lo, hi *float64, format string) string {
	if med == nil {
		return "n/a"
	}
	s := fmt.Sprintf(format, *med)
	if lo != nil && hi != nil && *lo != *hi {
		s += fmt.Sprintf(" ("+format+"–"+format+")", *lo, *hi)
	}
	return s
}

func pf(p *float64, format string) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *p)
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func tick(s string) string { return strings.ReplaceAll(s, "`", "'") }

func nonEmpty(xs ...string) []string {
	var out []string
	for _, x := range xs {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

func bytesLabel(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtDuration(s float64) string {
	if s <= 0 {
		return "?"
	}
	return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
}

// Charts renders the SVG charts, by file name.
func Charts(r *Report) map[string][]byte {
	out := map[string][]byte{}
	p := r.Params
	nan := math.NaN()
	note := fmt.Sprintf("%s, %s mode; medians, whiskers min–max", r.Env.Date, r.Mode)
	if p.Has(PartNet) {
		var groups []string
		for _, pl := range Placements {
			for _, st := range p.Streams {
				groups = append(groups, fmt.Sprintf("%s P%d", pl, st))
			}
		}
		var series []report.Series
		for i, n := range NetNames {
			s := report.Series{Name: n, Color: report.PaletteColor(i)}
			for _, pl := range Placements {
				for _, st := range p.Streams {
					c := r.Net(n, pl, st)
					if c == nil {
						s.Values, s.Low, s.High = append(s.Values, nan), append(s.Low, nan), append(s.High, nan)
						continue
					}
					s.Values = append(s.Values, perfnet.Val(c.MedianGbps))
					s.Low = append(s.Low, perfnet.Val(c.MinGbps))
					s.High = append(s.High, perfnet.Val(c.MaxGbps))
				}
			}
			series = append(series, s)
		}
		out["kind.svg"] = report.Chart{Title: "kind: pod-to-pod TCP throughput (iperf3)", YLabel: "Gbit/s",
			Groups: groups, Series: series, Note: note}.SVG()
	}
	if p.Has(PartShaped) {
		var groups []string
		for _, rate := range p.ShapedRates {
			for _, st := range p.ShapedStreams {
				groups = append(groups, fmt.Sprintf("%s P%d", rate, st))
			}
		}
		acc := []report.Series{{Name: Ref, Color: report.PaletteColor(0)}, {Name: Berth, Color: report.PaletteColor(1)},
			{Name: Ref + ", second half", Color: "#9ecae1"}, {Name: Berth + ", second half", Color: "#fdd0a2"}}
		rtt := []report.Series{{Name: Ref + " p50", Color: "#9ecae1"}, {Name: Berth + " p50", Color: "#fdd0a2"},
			{Name: Ref + " p99", Color: report.PaletteColor(0)}, {Name: Berth + " p99", Color: report.PaletteColor(1)}}
		for _, rate := range p.ShapedRates {
			for _, st := range p.ShapedStreams {
				for i, cl := range []string{Ref, Berth} {
					c := r.ShapedOf(cl, rate, st)
					a, lo, hi, la, p50, p99 := nan, nan, nan, nan, nan, nan
					if c != nil && c.RateMbps > 0 {
						a, la = perfnet.Val(c.Accuracy), perfnet.Val(c.LateAcc)
						lo, hi = perfnet.Val(c.MinMbps)/c.RateMbps, perfnet.Val(c.MaxMbps)/c.RateMbps
						p50, p99 = perfnet.Val(c.RTTp50), perfnet.Val(c.RTTp99)
					}
					acc[i].Values, acc[i].Low, acc[i].High = append(acc[i].Values, a), append(acc[i].Low, lo), append(acc[i].High, hi)
					acc[i+2].Values = append(acc[i+2].Values, la)
					rtt[i].Values = append(rtt[i].Values, p50)
					rtt[i+2].Values = append(rtt[i+2].Values, p99)
				}
			}
		}
		out["kind-shaped.svg"] = report.Chart{Title: "kind: shaped pod, achieved ÷ configured rate", YLabel: "achieved ÷ rate",
			Groups: groups, Series: acc, ValueFormat: "%.2f", Lines: []report.HLine{{Value: 1, Label: "the rate"}}, YMax: 3, Note: note + "; bars above 3 are cut"}.SVG()
		out["kind-rtt.svg"] = report.Chart{Title: "kind: RTT from a shaped pod under its own load", YLabel: "ms",
			Groups: groups, Series: rtt, ValueFormat: "%.1f", Note: fmt.Sprintf("%s, %s mode; ping every %d ms during iperf3", r.Env.Date, r.Mode, p.PingIntervalMs)}.SVG()
	}
	if f := r.Fio; p.Has(PartFio) && f != nil && f.Skipped == "" {
		var groups []string
		s := report.Series{Name: "berth-csi ÷ hostPath", Color: report.PaletteColor(1)}
		for _, j := range f.Jobs {
			groups = append(groups, j.ID)
			bs, _ := f.summary(j.ID, FioBerth)
			h, _ := f.summary(j.ID, FioHostPath)
			hv := perfnet.Val(h.Median)
			s.Values = append(s.Values, report.Ratio(perfnet.Val(bs.Median), hv))
			s.Low = append(s.Low, report.Ratio(perfnet.Val(bs.Min), hv))
			s.High = append(s.High, report.Ratio(perfnet.Val(bs.Max), hv))
		}
		out["kind-fio.svg"] = report.Chart{Title: "kind: fio on a berth-csi PVC ÷ hostPath, same pod", YLabel: "berth-csi ÷ hostPath",
			Groups: groups, Series: []report.Series{s}, Lines: []report.HLine{{Value: 1, Label: "hostPath"}}, YMax: 3,
			Note: fmt.Sprintf("%s, %s mode; MiB/s (sequential) or IOPS (random); whiskers: berth-csi min–max ÷ hostPath median", r.Env.Date, r.Mode)}.SVG()
	}
	if p.Has(PartPodStart) {
		groups := []string{"sequential p50", "sequential p99", "burst p50", "burst p99"}
		series := []report.Series{{Name: Ref, Color: report.PaletteColor(0)}, {Name: Berth, Color: report.PaletteColor(1)}}
		for i, cl := range []string{Ref, Berth} {
			for _, mode := range []string{StartSequential, StartBurst} {
				s := r.PodStartOf(cl, mode)
				p50, p99 := nan, nan
				if s != nil {
					p50, p99 = perfnet.Val(s.P50ms), perfnet.Val(s.P99ms)
				}
				series[i].Values = append(series[i].Values, p50, p99)
			}
		}
		out["kind-podstart.svg"] = report.Chart{Title: "kind: pod start, create → Ready", YLabel: "ms",
			Groups: groups, Series: series, ValueFormat: "%.0f", Note: fmt.Sprintf("%s, %s mode; %d pods per cluster and mode", r.Env.Date, r.Mode, p.Pods)}.SVG()
	}
	return out
}

// SummaryTable is the report's headline table, one row per measure with
// its pairs side by side: the rows the README's benchmark section shows.
func SummaryTable(r *Report) string {
	p := r.Params
	var rows [][]string
	pair := func(label string, b, ref func(i int) float64, n int, format string) {
		var bs, rs, qs []string
		seen := false
		for i := 0; i < n; i++ {
			bv, rv := b(i), ref(i)
			seen = seen || !math.IsNaN(bv) || !math.IsNaN(rv)
			bs, rs, qs = append(bs, fnum(bv, format)), append(rs, fnum(rv, format)), append(qs, f2(report.Ratio(bv, rv)))
		}
		if seen {
			rows = append(rows, []string{label, strings.Join(bs, " / "), strings.Join(rs, " / "), strings.Join(qs, " / ")})
		}
	}
	streams := func(ps []int) string {
		var s []string
		for _, x := range ps {
			s = append(s, fmt.Sprintf("P%d", x))
		}
		return strings.Join(s, " / ")
	}
	if p.Has(PartNet) {
		for _, net := range []string{NetBerthVXLAN, NetBerthMacvlan} {
			for _, pl := range Placements {
				pair(fmt.Sprintf("%s vs %s, %s, %s (Gbit/s)", net, NetRef, pl, streams(p.Streams)),
					func(i int) float64 { return netMedian(r.Net(net, pl, p.Streams[i])) },
					func(i int) float64 { return netMedian(r.Net(NetRef, pl, p.Streams[i])) }, len(p.Streams), "%.2f")
			}
		}
	}
	if p.Has(PartShaped) {
		for _, rate := range p.ShapedRates {
			get := func(cl string, i int, f func(*ShapedCase) *float64) float64 {
				c := r.ShapedOf(cl, rate, p.ShapedStreams[i])
				if c == nil {
					return math.NaN()
				}
				return perfnet.Val(f(c))
			}
			pair(fmt.Sprintf("shaped %s, achieved Mbit/s, %s", rate, streams(p.ShapedStreams)),
				func(i int) float64 { return get(Berth, i, func(c *ShapedCase) *float64 { return c.MedianMbps }) },
				func(i int) float64 { return get(Ref, i, func(c *ShapedCase) *float64 { return c.MedianMbps }) }, len(p.ShapedStreams), "%.1f")
			pair(fmt.Sprintf("shaped %s, achieved Mbit/s over the second half, %s", rate, streams(p.ShapedStreams)),
				func(i int) float64 { return get(Berth, i, func(c *ShapedCase) *float64 { return c.LateMedian }) },
				func(i int) float64 { return get(Ref, i, func(c *ShapedCase) *float64 { return c.LateMedian }) }, len(p.ShapedStreams), "%.1f")
			pair(fmt.Sprintf("shaped %s, RTT p99 under load ms, %s", rate, streams(p.ShapedStreams)),
				func(i int) float64 { return get(Berth, i, func(c *ShapedCase) *float64 { return c.RTTp99 }) },
				func(i int) float64 { return get(Ref, i, func(c *ShapedCase) *float64 { return c.RTTp99 }) }, len(p.ShapedStreams), "%.2f")
		}
	}
	if f := r.Fio; p.Has(PartFio) && f != nil {
		// One row per pattern: its buffered job, then its O_DIRECT one.
		for _, buffered := range f.Jobs {
			if buffered.Direct {
				continue
			}
			jobs := []csifio.Job{buffered, {ID: "none"}}
			for _, j := range f.Jobs {
				if j.Direct && j.Pattern == buffered.Pattern {
					jobs[1] = j
				}
			}
			val := func(target string) func(k int) float64 {
				return func(k int) float64 {
					s, ok := f.summary(jobs[k].ID, target)
					if !ok {
						return math.NaN()
					}
					return perfnet.Val(s.Median)
				}
			}
			pair(fmt.Sprintf("fio %s %s, buffered / O_DIRECT, berth-csi vs hostPath (%s)", jobs[0].Pattern, jobs[0].BS, jobs[0].Unit),
				val(FioBerth), val(FioHostPath), 2, "%.0f")
		}
	}
	if p.Has(PartPodStart) {
		for _, mode := range []string{StartSequential, StartBurst} {
			get := func(cl string, k int) float64 {
				s := r.PodStartOf(cl, mode)
				if s == nil {
					return math.NaN()
				}
				if k == 0 {
					return perfnet.Val(s.P50ms)
				}
				return perfnet.Val(s.P99ms)
			}
			pair(fmt.Sprintf("pod start, %d pods %s, p50 / p99 ms", p.Pods, mode),
				func(k int) float64 { return get(Berth, k) }, func(k int) float64 { return get(Ref, k) }, 2, "%.0f")
		}
	}
	if len(rows) == 0 {
		return "Nothing was measured.\n"
	}
	return report.Table([]string{"", "berth", "reference", "berth ÷ reference"}, rows)
}

func netMedian(c *NetCase) float64 {
	if c == nil {
		return math.NaN()
	}
	return perfnet.Val(c.MedianGbps)
}

func fnum(v float64, format string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
