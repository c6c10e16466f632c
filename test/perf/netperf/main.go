// Command netperf is berth's network performance REPORT. It builds its own
// topologies out of network namespaces (all named bperf-*, all addresses in
// 198.18.0.0/15, never touching the machine's NICs), measures pod-to-pod
// TCP throughput with iperf3 for berth-cni and for reference setups side by
// side, times CNI ADD/DEL of berth against the reference macvlan plugin,
// and writes net.json, net.md and net.svg. Missed targets are reported,
// never turned into a failing exit code.
//
// Run as root from the repository root:
//
//	go run ./test/perf/netperf --berth-bin _output/bin/berth --out test/perf/results
//	go run ./test/perf/netperf --quick            # ~1 minute smoke run
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

type options struct {
	berthBin    string
	out         string
	refDir      string
	iperf3      string
	duration    time.Duration
	repeats     int
	streams     []int
	cniCalls    int
	basePort    int
	quick       bool
	cases       map[string]bool // nil = all
	cleanupOnly bool
	verbose     bool
	buildError  string
}

const allCasesHelp = "veth-raw,macvlan-ref,macvlan-berth,bridge-ref,vxlan-flannel-like,vxlan-berth,cni-latency"

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("netperf", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `netperf: berth network performance report (run as root).

Builds bperf-* network namespaces (addresses in 198.18.0.0/15 only), runs
iperf3 TCP pod-to-pod for berth-cni and reference setups, interleaved, and
times CNI ADD/DEL of berth vs the reference macvlan plugin. Writes
net.json, net.md, net.svg and net-cni.svg to --out. Exit status: 0 when the
report was written (missed targets and berth failures included), 1 when
the run could not start, a baseline/reference case failed (harness or
machine problem) or berth-cni did not build, 130 when interrupted. Everything created is removed on
exit, SIGINT or SIGTERM; a later run also sweeps bperf-* namespaces left
by a killed one (or use --cleanup-only).

Usage: go run ./test/perf/netperf [flags]

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.berthBin, "berth-bin", "_output/bin/berth", "berth-cni plugin binary (build: go build -o _output/bin/berth ./cmd/berth-cni)")
	fs.StringVar(&o.out, "out", "test/perf/results", "output directory for net.json, net.md, net.svg, net-cni.svg")
	fs.StringVar(&o.refDir, "ref-plugins", "/usr/lib/cni", "directory of the reference CNI plugins (macvlan, bridge, host-local)")
	fs.StringVar(&o.iperf3, "iperf3", "iperf3", "iperf3 binary")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "iperf3 duration per sample (whole seconds)")
	fs.IntVar(&o.repeats, "repeats", 3, "samples per case and stream count; the median is reported")
	streams := fs.String("streams", "1,4", "comma-separated iperf3 -P values")
	fs.IntVar(&o.cniCalls, "cni-calls", 200, "ADD (then DEL) calls per plugin in the latency benchmark")
	fs.IntVar(&o.basePort, "base-port", 5201, "iperf3 port of the first case; case i uses base-port+i")
	fs.BoolVar(&o.quick, "quick", false, "smoke mode: --duration 2s --repeats 1 --cni-calls 20 unless those are given")
	cases := fs.String("cases", "all", "comma-separated subset of "+allCasesHelp)
	fs.BoolVar(&o.cleanupOnly, "cleanup-only", false, "only remove bperf-* namespaces left by an earlier run, then exit")
	fs.BoolVar(&o.verbose, "v", false, "verbose logging")
	fs.StringVar(&o.buildError, "berth-build-error", "", "set by hack/perf-net.sh when go build of berth-cni failed: berth cases are skipped with this reason and the exit status is 1")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["repeats"] {
			o.repeats = 1
		}
		if !set["cni-calls"] {
			o.cniCalls = 20
		}
	}
	if o.duration < time.Second {
		return o, errors.New("--duration must be at least 1s")
	}
	if o.repeats < 1 || o.cniCalls < 1 {
		return o, errors.New("--repeats and --cni-calls must be >= 1")
	}
	if o.cniCalls > 250 {
		return o, errors.New("--cni-calls must be <= 250 (the latency pods share one /24)")
	}
	for _, f := range strings.Split(*streams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 128 {
			return o, fmt.Errorf("bad --streams entry %q", f)
		}
		o.streams = append(o.streams, n)
	}
	if *cases != "all" {
		known := map[string]bool{}
		for _, c := range strings.Split(allCasesHelp, ",") {
			known[c] = true
		}
		o.cases = map[string]bool{}
		for _, c := range strings.Split(*cases, ",") {
			c = strings.TrimSpace(c)
			if !known[c] {
				return o, fmt.Errorf("unknown case %q (known: %s)", c, allCasesHelp)
			}
			o.cases[c] = true
		}
	}
	return o, nil
}

func (o options) want(name string) bool { return o.cases == nil || o.cases[name] }

// harness ties the options, the cleanup registry and the plugins together.
type harness struct {
	opts     options
	env      *env
	berth    plugin
	berthErr error
	logf     func(string, ...any)
}

func (h *harness) refPlugin(name string) plugin {
	return plugin{Label: "ref", Path: filepath.Join(h.opts.refDir, name), CNIPath: h.opts.refDir}
}

func (h *harness) berthAvailable() error { return h.berthErr }

func main() { os.Exit(realMain(os.Args[1:])) }

func realMain(args []string) int {
	t0 := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "netperf %6.1fs: %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
	}
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netperf:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "netperf: must run as root (network namespaces, CNI plugins)")
		return 1
	}
	sweepStale(logf)
	if o.cleanupOnly {
		return 0
	}
	if err := preflight(&o); err != nil {
		fmt.Fprintln(os.Stderr, "netperf:", err)
		return 1
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	e := perfnet.NewEnv(nsPrefix, logf, o.verbose)
	h := &harness{opts: o, env: e, logf: logf}
	h.berth, h.berthErr = findBerth(o.berthBin)
	if o.buildError != "" {
		h.berthErr = fmt.Errorf("berth-cni did not build: %s", tail(strings.TrimSpace(o.buildError), 1500))
	}
	if h.berthErr != nil {
		logf("berth cases will be reported as skipped: %v", h.berthErr)
	}

	before := rootLinks()
	rep := newReport(ctx, h, args, t0)
	cleaned := false
	doCleanup := func() {
		if cleaned {
			return
		}
		cleaned = true
		logf("cleaning up")
		rep.Cleanup = e.Cleanup()
		for name := range rootLinks() {
			if !before[name] {
				rep.Cleanup = append(rep.Cleanup, "link appeared in the root namespace during the run (netperf creates none there: a plugin or other work on the machine did): "+name)
			}
		}
		for _, p := range rep.Cleanup {
			logf("cleanup: %s", p)
		}
	}
	// Whatever happens below (error, panic, SIGINT), undo everything.
	defer doCleanup()

	h.runThroughput(ctx, rep)
	if o.want("cni-latency") && ctx.Err() == nil {
		rep.CNILatency = h.runLatency(ctx, o.cniCalls)
	}
	rep.Interrupted = ctx.Err() != nil
	stopSignals() // a second Ctrl-C during cleanup kills us; the next run sweeps
	doCleanup()
	rep.finish(time.Now())

	if err := writeOutputs(o.out, rep); err != nil {
		fmt.Fprintln(os.Stderr, "netperf: writing report:", err)
		return 1
	}
	logf("wrote %s", strings.Join([]string{
		filepath.Join(o.out, "net.json"), filepath.Join(o.out, "net.md"),
		filepath.Join(o.out, "net.svg"), filepath.Join(o.out, "net-cni.svg")}, ", "))
	fmt.Print(summaryText(rep))
	fmt.Printf("report: %s\n", filepath.Join(o.out, "net.md"))
	switch {
	case rep.Interrupted:
		return 130
	case rep.referenceFailed():
		logf("a baseline/reference case failed: the harness or machine is not measuring what it should (see net.md)")
		return 1
	case o.buildError != "":
		logf("berth-cni did not build; its cases were skipped (see net.md)")
		return 1
	}
	return 0
}

// preflight checks the tools exist before anything is created.
func preflight(o *options) error {
	for _, t := range []string{"ip", "bridge", "sysctl"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (run hack/install-deps.sh)", t)
		}
	}
	p, err := exec.LookPath(o.iperf3)
	if err != nil {
		return fmt.Errorf("iperf3 not found (run hack/install-deps.sh): %v", err)
	}
	o.iperf3 = p
	for _, pl := range []string{"macvlan", "bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(o.refDir, pl)); err != nil {
			return fmt.Errorf("reference plugin %s missing in %s (apt-get install containernetworking-plugins)", pl, o.refDir)
		}
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	return nil
}

// runThroughput sets every selected case up, warms it up, then measures
// all of them interleaved: each repeat walks the cases in turn (A B C A B
// C ...), rotating the starting case, so slow drift of a noisy VM spreads
// over all cases instead of landing on one.
func (h *harness) runThroughput(ctx context.Context, rep *netReport) {
	logDir, err := h.env.TempDir("bperf-logs-")
	if err != nil {
		logDir = os.TempDir()
	}
	var active []*caseResult
	for i, c := range throughputCases() {
		if !h.opts.want(c.Name) {
			continue
		}
		cr := &caseResult{Name: c.Name, Description: c.Desc, Kind: c.Kind, Port: h.opts.basePort + i}
		for _, s := range h.opts.streams {
			cr.Streams = append(cr.Streams, &streamResult{Streams: s})
		}
		rep.Throughput = append(rep.Throughput, cr)
		if ctx.Err() != nil {
			cr.Status, cr.Error = "failed", "interrupted"
			continue
		}
		h.logf("setup %s", c.Name)
		ep, err := c.setup(ctx, h)
		if err == nil {
			cr.Endpoints = ep
			h.logf("  server %s in %s, client %s in %s, pod MTU %d", ep.ServerIP, ep.ServerNS, ep.ClientIP, ep.ClientNS, ep.PodMTU)
			var srv *iperfServer
			srv, err = h.env.StartIperfServer(ctx, h.opts.iperf3, ep.ServerNS, cr.Port, logDir)
			if err == nil {
				cr.serverLog = srv.Log
				// Warm-up: proves the data path works (ARP, FDB, routes)
				// before anything is measured; not recorded as a sample.
				_, err = runIperfClient(ctx, h.opts.iperf3, ep.ClientNS, ep.ServerIP, cr.Port, 1, time.Second)
				if err != nil {
					err = fmt.Errorf("warm-up iperf3 run failed: %w", err)
				}
			}
		}
		if err != nil {
			status := "failed"
			if c.Kind == "berth" && h.berthErr != nil {
				status = "skipped"
			}
			cr.Status, cr.Error = status, err.Error()
			h.logf("  %s %s: %v", c.Name, status, err)
			continue
		}
		cr.Status = "ok"
		active = append(active, cr)
	}

	// Record what the bridged cases' frames went through (br_netfilter is
	// per-netns; read it where the bridges are).
	for _, c := range active {
		if c.Name == "bridge-ref" || c.Name == "vxlan-flannel-like" {
			node := map[string]string{"bridge-ref": "bperf-br-node", "vxlan-flannel-like": "bperf-vf-n1"}[c.Name]
			if v, err := nsExec(ctx, node, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
				rep.Machine.NetworkSysctl["bridge-nf-call-iptables ("+c.Name+" node netns)"] = v
			}
		}
	}

	total := h.opts.repeats * len(h.opts.streams) * len(active)
	n := 0
	for r := 0; r < h.opts.repeats; r++ {
		for si, streams := range h.opts.streams {
			if len(active) == 0 {
				break
			}
			rot := (r*len(h.opts.streams) + si) % len(active)
			for k := range active {
				cr := active[(rot+k)%len(active)]
				if ctx.Err() != nil {
					return
				}
				n++
				sr := cr.Streams[si]
				s, err := runIperfClient(ctx, h.opts.iperf3, cr.Endpoints.ClientNS, cr.Endpoints.ServerIP, cr.Port, streams, h.opts.duration)
				s.Repeat, s.Order = r+1, n
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					s.Error = err.Error()
					sr.Errors++
					h.logf("[%d/%d] %-19s P%d repeat %d: error: %v", n, total, cr.Name, streams, r+1, err)
				} else {
					h.logf("[%d/%d] %-19s P%d repeat %d: %6.2f Gbit/s (retr %d)", n, total, cr.Name, streams, r+1, s.Gbps, s.Retransmits)
				}
				sr.Samples = append(sr.Samples, s)
				time.Sleep(300 * time.Millisecond) // let the server reset
			}
		}
	}
}

// quoteArgs renders argv for copy-paste.
func quoteArgs(args []string) string {
	var q []string
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}

// sortedKeys is a helper for deterministic output.
func sortedKeys(m map[string]bool) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
