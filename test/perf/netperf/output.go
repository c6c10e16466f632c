package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/berthdev/berth/test/perf/report"
)

func writeOutputs(dir string, r *netReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"net.json":    append(js, '\n'),
		"net.md":      []byte(markdown(r)),
		"net.svg":     throughputChart(r),
		"net-cni.svg": latencyChart(r),
	}
	for name, b := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func val(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func throughputChart(r *netReport) []byte {
	var groups []string
	series := make([]report.Series, len(r.Params.Streams))
	for i, st := range r.Params.Streams {
		series[i].Name = fmt.Sprintf("P%d (iperf3 -P %d)", st, st)
	}
	for _, c := range r.Throughput {
		groups = append(groups, c.Name)
		for i := range r.Params.Streams {
			var s *streamResult
			if i < len(c.Streams) {
				s = c.Streams[i]
			}
			if s == nil || c.Status != "ok" {
				series[i].Values = append(series[i].Values, math.NaN())
				series[i].Low = append(series[i].Low, math.NaN())
				series[i].High = append(series[i].High, math.NaN())
				continue
			}
			series[i].Values = append(series[i].Values, val(s.MedianGbps))
			series[i].Low = append(series[i].Low, val(s.MinGbps))
			series[i].High = append(series[i].High, val(s.MaxGbps))
		}
	}
	return report.Chart{
		Title:  fmt.Sprintf("Pod-to-pod TCP throughput, median of %d x %s", r.Params.Repeats, r.Params.Duration),
		YLabel: "Gbit/s (receiver)",
		Groups: groups,
		Series: series,
		Note:   "whiskers: min..max of the repeats; n/a: case failed or skipped; 2-core noisy VM, compare within one run",
	}.SVG()
}

func latencyChart(r *netReport) []byte {
	groups := []string{"ADD p50", "ADD p99", "DEL p50", "DEL p99"}
	var series []report.Series
	for _, l := range r.CNILatency {
		series = append(series, report.Series{
			Name:   l.Plugin + " macvlan",
			Values: []float64{val(l.AddP50), val(l.AddP99), val(l.DelP50), val(l.DelP99)},
		})
	}
	n := r.Params.CNICalls
	return report.Chart{
		Title:       fmt.Sprintf("CNI ADD/DEL latency, %d sequential calls each", n),
		YLabel:      "milliseconds (fork to exit)",
		Groups:      groups,
		Series:      series,
		ValueFormat: "%.1f",
		Note:        "lower is better; 2-core noisy VM",
	}.SVG()
}

func gb(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *p)
}

func ms(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *p)
}

func markdown(r *netReport) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	mode := "full"
	if r.Params.Quick {
		mode = "quick (smoke)"
	}
	w("# berth network performance report\n\n")
	w("> **Caveat: this is a 2-core noisy VM.** iperf3's client and server, the kernel's softirq work and the plugins all share two vCPUs, ")
	w("so absolute numbers and ratios move by several percent from run to run. Compare cases *within* one run (they are interleaved for that), ")
	w("look at the min–max ranges, and do not read a few percent as a regression. This is a report, not a pass/fail test: a missed target never fails the run.\n\n")
	if r.Interrupted {
		w("> **The run was interrupted**; the numbers below are partial.\n\n")
	}
	berth := "**not available** (see \"berth-cni not measured\" below)"
	if r.Machine.Berth.Present {
		berth = fmt.Sprintf("`%s` sha256 `%.12s`, built %s", r.Machine.Berth.Path, r.Machine.Berth.SHA256, r.Machine.Berth.Modified)
	}
	w("Run %s (%s, took %s), %s mode: %d × %s per case and stream count, %d CNI calls per verb. Kernel %s, %d CPUs (%s). berth-cni: %s.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Machine.Hostname, r.Finished.Sub(r.Started).Round(1e9), mode,
		r.Params.Repeats, r.Params.Duration, r.Params.CNICalls, r.Machine.Kernel, r.Machine.CPUs, r.Machine.CPUModel, berth)

	w("Machine load: load average %s at start, %s at end; over the run the CPUs were %.0f%% busy in all (this run included) and %.1f%% stolen by the hypervisor. Other work on the machine during the run shows up as noise.\n\n",
		r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd, r.Machine.CPUBusyPct, r.Machine.CPUStealPct)
	w("## Reproduce\n\n```sh\n# as root, from the repository root; installs deps and builds berth first:\nhack/perf-net.sh\n")
	w("# or just the measurement, as this report was made:\n%s\n```\n\n", r.Command)

	w("## Pod-to-pod TCP throughput (iperf3, Gbit/s)\n\n")
	w("Median of the repeats of `iperf3 -J` `end.sum_received.bits_per_second`; min–max of the repeats in brackets. ")
	w("Server in one pod netns, client in the other (`ip netns exec`), one fixed port per case, cases interleaved round-robin.\n\n")
	hdr := []string{"case"}
	for _, st := range r.Params.Streams {
		hdr = append(hdr, fmt.Sprintf("P%d median", st), fmt.Sprintf("P%d min–max", st))
	}
	hdr = append(hdr, "pod MTU", "status")
	var rows [][]string
	for _, c := range r.Throughput {
		row := []string{"`" + c.Name + "`"}
		for _, s := range c.Streams {
			med, rng := gb(s.MedianGbps), "–"
			if s.MinGbps != nil {
				rng = fmt.Sprintf("%.2f–%.2f (n=%d)", *s.MinGbps, *s.MaxGbps, len(s.Gbps()))
			}
			if s.Errors > 0 {
				rng += fmt.Sprintf(", %d errors", s.Errors)
			}
			if c.Status != "ok" {
				med, rng = "n/a", "–"
			}
			row = append(row, med, rng)
		}
		mtu := "–"
		if c.Endpoints != nil && c.Endpoints.PodMTU > 0 {
			mtu = fmt.Sprint(c.Endpoints.PodMTU)
		}
		st := c.Status
		if c.Status != "ok" {
			st = "**" + c.Status + "** (see Errors)"
		}
		row = append(row, mtu, st)
		rows = append(rows, row)
	}
	w("%s\n", report.Table(hdr, rows))
	w("![Pod-to-pod throughput: grouped bars per case, P1 and P4](net.svg)\n\n")
	for _, c := range r.Throughput {
		w("- `%s` (%s): %s\n", c.Name, c.Kind, c.Description)
	}
	w("\n")

	w("## Ratios vs targets\n\n")
	w("Ratios of medians from this run. \"noise\" says whether the numerator's min–max range overlaps target × the denominator's range: if it does, the verdict could flip on a re-run.\n\n")
	rows = nil
	for _, rt := range append(append([]ratio{}, r.Ratios...), r.LatRatios...) {
		v := "n/a"
		if rt.Value != nil {
			v = fmt.Sprintf("%.3f", *rt.Value)
		}
		res := rt.Result
		if rt.Reason != "" {
			res += " (" + rt.Reason + ")"
		}
		if rt.Result == "target missed" {
			res = "**" + res + "**"
		}
		rows = append(rows, []string{rt.Name, rt.Metric, v, rt.Target, res, rt.Noise})
	}
	w("%s\n", report.Table([]string{"ratio", "metric", "value", "target", "result", "noise"}, rows))

	w("## CNI ADD / DEL latency\n\n")
	w("%d sequential ADDs, then %d DELs, per plugin, alternating berth and reference call by call. Each call is a fork/exec of the plugin binary ", r.Params.CNICalls, r.Params.CNICalls)
	w("exactly as a runtime makes it (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH; conf on stdin; DEL gets the ADD result as prevResult, as libcni does), ")
	w("from a thread inside the node netns; only fork-to-exit is timed, every pod netns was created beforehand. ADD *i* runs with *i* pods already on the node. ")
	w("Percentiles are nearest-rank (p99 of 200 = 198th fastest; with fewer than 100 calls p99 is the maximum).\n\n")
	rows = nil
	for _, l := range r.CNILatency {
		st := l.Status
		if l.Error != "" {
			st += ": " + tail(l.Error, 200)
		}
		rows = append(rows, []string{l.Plugin, ms(l.AddP50), ms(l.AddP99), ms(l.DelP50), ms(l.DelP99),
			fmt.Sprintf("%d/%d, %d/%d", len(l.AddMs), l.Calls, len(l.DelMs), l.Calls), st})
	}
	if len(rows) == 0 {
		w("Not run (--cases).\n\n")
	} else {
		w("%s\n", report.Table([]string{"plugin", "ADD p50 ms", "ADD p99 ms", "DEL p50 ms", "DEL p99 ms", "ok ADD, DEL", "status"}, rows))
		for _, l := range r.CNILatency {
			w("- %s: %s\n", l.Plugin, l.Desc)
		}
		w("\n![CNI ADD/DEL latency p50/p99, berth vs reference](net-cni.svg)\n\n")
	}

	if !r.Machine.Berth.Present {
		w("## berth-cni not measured\n\nIts cases are skipped and its ratios are n/a because:\n\n```text\n%s\n```\n\n", strings.TrimSpace(r.Machine.Berth.Error))
	}
	var errs []string
	for _, c := range r.Throughput {
		if c.Error != "" && c.Status == "skipped" && c.Error == r.Machine.Berth.Error {
			errs = append(errs, fmt.Sprintf("`%s` skipped: berth-cni not available (see above)", c.Name))
		} else if c.Error != "" {
			errs = append(errs, fmt.Sprintf("`%s` %s: %s", c.Name, c.Status, c.Error))
		}
		for _, s := range c.Streams {
			for _, x := range s.Samples {
				if x.Error != "" {
					errs = append(errs, fmt.Sprintf("`%s` P%d repeat %d: %s", c.Name, s.Streams, x.Repeat, x.Error))
				}
			}
		}
	}
	for _, l := range r.CNILatency {
		for _, e := range l.FirstError {
			errs = append(errs, fmt.Sprintf("cni-latency %s: %s", l.Plugin, e))
		}
		if l.Status == "skipped" && l.Error == r.Machine.Berth.Error {
			errs = append(errs, fmt.Sprintf("cni-latency %s skipped: berth-cni not available (see above)", l.Plugin))
		} else if l.Status == "skipped" {
			errs = append(errs, fmt.Sprintf("cni-latency %s skipped: %s", l.Plugin, l.Error))
		}
	}
	for _, p := range r.Cleanup {
		errs = append(errs, "cleanup: "+p)
	}
	if len(errs) > 0 {
		w("## Errors\n\n")
		for _, e := range errs {
			w("- %s\n", strings.ReplaceAll(e, "\n", " "))
		}
		w("\n")
	}

	w("## Machine\n\n")
	mrows := [][]string{
		{"date", r.Machine.Date},
		{"kernel", r.Machine.Kernel + " " + r.Machine.KernelBuild},
		{"OS", r.Machine.OS},
		{"CPUs", fmt.Sprintf("%d × %s", r.Machine.CPUs, r.Machine.CPUModel)},
		{"memory", r.Machine.MemTotal},
		{"load average (start / end)", r.Machine.LoadAvgStart + " / " + r.Machine.LoadAvgEnd},
		{"CPU busy / steal over the run", fmt.Sprintf("%.1f%% / %.1f%%", r.Machine.CPUBusyPct, r.Machine.CPUStealPct)},
		{"Go", r.Machine.GoVersion},
	}
	if r.Machine.GitCommit != "" {
		mrows = append(mrows, []string{"git commit", r.Machine.GitCommit})
	}
	for _, k := range sortedKeys(keys(r.Machine.Tools)) {
		mrows = append(mrows, []string{k, r.Machine.Tools[k]})
	}
	if r.Machine.Berth.Present {
		mrows = append(mrows, []string{"berth-cni", fmt.Sprintf("%s, %d bytes, sha256 %s, VERSION: %s", r.Machine.Berth.Path, r.Machine.Berth.Size, r.Machine.Berth.SHA256, r.Machine.Berth.Version)})
	} else {
		mrows = append(mrows, []string{"berth-cni", "not available: " + r.Machine.Berth.Error})
	}
	for _, k := range sortedKeys(keys(r.Machine.NetworkSysctl)) {
		mrows = append(mrows, []string{k, r.Machine.NetworkSysctl[k]})
	}
	w("%s\n", report.Table([]string{"what", "value"}, mrows))

	w("## Method and notes\n\n")
	w("- Everything runs in network namespaces named `bperf-*` with addresses from 198.18.0.0/15; no link is created in the root namespace and no machine NIC is used. All of it is removed at exit, on error and on SIGINT/SIGTERM.\n")
	w("- macvlan cases: a node netns holds a veth pair `bpm0`/`bpm0p` (both up); `bpm0` is the macvlan master; two pods on that node talk through the macvlan bridge.\n")
	w("- vxlan cases: two node netns joined by a veth underlay `bpu0` (198.18.0.1/24 and 198.18.0.2/24, MTU 1500), one pod per node, traffic crosses the overlay. The flannel-like case programs `flannel.1` (VNI 1, dstport 4789, nolearning, MTU 1450) with static FDB, neighbour and onlink routes and hangs pods off a bridge made by the reference bridge plugin, as flannel's vxlan backend does; `vxlan-berth` lets berth-cni make `berth.1` and program its peers from a peers file.\n")
	w("- `veth-raw` is the intended ceiling, but every case here is in-memory forwarding inside one kernel: macvlan-to-macvlan on one master never crosses the veth at all and can beat it, so a ratio to `veth-raw` above 1 is not an error.\n")
	w("- `bridge-ref` and `vxlan-flannel-like` pods sit on a Linux bridge (flannel's `cni0` design), so when `bridge-nf-call-iptables` is 1 in their node netns (see Machine) their frames also pass the br_netfilter hooks, as on a Kubernetes node with br_netfilter loaded.\n")
	w("- Each case gets a 1 s warm-up (not recorded) that proves its data path before measuring.\n")
	for _, n := range r.Notes {
		w("- %s\n", n)
	}
	w("\nRaw samples, per-sample retransmits and CPU use, endpoints and every error are in [net.json](net.json).\n")
	return b.String()
}

func keys[V any](m map[string]V) map[string]bool {
	k := map[string]bool{}
	for x := range m {
		k[x] = true
	}
	return k
}

// summaryText is what the run prints on stdout at the end.
func summaryText(r *netReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nthroughput (median Gbit/s):\n")
	for _, c := range r.Throughput {
		fmt.Fprintf(&b, "  %-20s", c.Name)
		for _, s := range c.Streams {
			fmt.Fprintf(&b, "  P%d %7s", s.Streams, gb(s.MedianGbps))
		}
		if c.Status != "ok" {
			fmt.Fprintf(&b, "  [%s]", c.Status)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "ratios:\n")
	for _, rt := range append(append([]ratio{}, r.Ratios...), r.LatRatios...) {
		v := "  n/a"
		if rt.Value != nil {
			v = fmt.Sprintf("%.3f", *rt.Value)
		}
		fmt.Fprintf(&b, "  %-45s %-28s %s (target %s) %s\n", rt.Name, rt.Metric, v, rt.Target, rt.Result)
	}
	if len(r.CNILatency) > 0 {
		fmt.Fprintf(&b, "cni latency ms (p50/p99):\n")
		for _, l := range r.CNILatency {
			fmt.Fprintf(&b, "  %-6s ADD %s/%s  DEL %s/%s  [%s]\n", l.Plugin, ms(l.AddP50), ms(l.AddP99), ms(l.DelP50), ms(l.DelP99), l.Status)
		}
	}
	return b.String()
}
