// Command dataplane is berth's eBPF dataplane performance REPORT: per-pod
// bandwidth shaping (accuracy, first-second overshoot, latency under load)
// against the reference CNI bandwidth plugin, the throughput cost of the
// tenant-isolation programs on an unshaped pod, and what the dataplane
// adds to CNI ADD. It builds its own topologies out of network namespaces
// (all named bpdp-*, all addresses in 198.19.0.0/16, never touching the
// machine's NICs), drives every plugin through libcni the way a container
// runtime does, and writes dataplane.json, dataplane.md and
// dataplane-*.svg. Missed targets are reported, never turned into a failing
// exit code.
//
// Run as root from the repository root:
//
//	go run ./test/perf/dataplane --berth-bin _output/bin/berth --out test/perf/results
//	go run ./test/perf/dataplane --quick            # ~3 minute smoke run
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// nsPrefix names every network namespace this program creates; only
// namespaces with this prefix are ever deleted.
const nsPrefix = "bpdp-"

// runLock serialises runs of this suite on one machine.
const runLock = "/run/berth-perf-dataplane.lock"

// Shaping cases (the --cases values) and measurements (--measure).
const (
	caseRef      = "ref-bandwidth-veth"
	caseRefBig   = "ref-bandwidth-veth-bigburst"
	caseBerthVe  = "berth-veth"
	caseBerthMv  = "berth-macvlan"
	allCases     = caseRef + "," + caseRefBig + "," + caseBerthVe + "," + caseBerthMv
	allMeasures  = "accuracy,latency,overhead,add-latency"
	defaultRates = "10,100,1000"
)

type options struct {
	berthBin     string
	out          string
	refDir       string
	iperf3       string
	duration     time.Duration // one iperf3 sample (shaping grid and overhead)
	repeats      int
	rates        []uint64 // bit/s
	streams      []int
	bigStreams   []int         // stream counts of the big-burst case in the accuracy grid
	latRates     []uint64      // bit/s
	probe        time.Duration // RTT probe under load
	cniCalls     int
	bigBurstBits uint64
	basePort     int
	quick        bool
	cases        map[string]bool
	measures     map[string]bool
	cleanupOnly  bool
	keep         bool
	render       string
	verbose      bool
	buildError   string
}

func parseMbits(list, flagName string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v < 0.1 || v > 100000 {
			return nil, fmt.Errorf("bad --%s entry %q (Mbit/s, 0.1-100000)", flagName, f)
		}
		out = append(out, uint64(math.Round(v*1e6)))
	}
	return out, nil
}

func parseSet(list, known, flagName string) (map[string]bool, error) {
	if list == "all" {
		list = known
	}
	ok := map[string]bool{}
	for _, k := range strings.Split(known, ",") {
		ok[k] = true
	}
	m := map[string]bool{}
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		if !ok[c] {
			return nil, fmt.Errorf("unknown --%s entry %q (known: %s)", flagName, c, known)
		}
		m[c] = true
	}
	return m, nil
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("dataplane", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `dataplane: berth eBPF dataplane performance report (run as root).

Builds bpdp-* network namespaces (addresses in 198.19.0.0/16 only) and
measures, interleaved in one run: shaping accuracy and first-second
overshoot (berth-cni veth and macvlan pods vs the reference bandwidth
plugin chained after ptp), RTT under a saturating load, the throughput
cost of the tenant-isolation programs, and CNI ADD latency with and
without the dataplane. Writes dataplane.json, dataplane.md and
dataplane-*.svg to --out. Exit status: 0 when the report was written
(missed targets and berth failures included), 1 when the run could not
start, a reference case failed (harness or machine problem) or berth-cni
did not build, 130 when interrupted. Everything created is removed on
exit, SIGINT or SIGTERM; a later run also sweeps bpdp-* namespaces left
by a killed one (or use --cleanup-only).

Usage: go run ./test/perf/dataplane [flags]

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.berthBin, "berth-bin", "_output/bin/berth", "berth-cni plugin binary (build: go build -o _output/bin/berth ./cmd/berth-cni)")
	fs.StringVar(&o.out, "out", "test/perf/results", "output directory for dataplane.json, dataplane.md, dataplane-*.svg")
	fs.StringVar(&o.refDir, "ref-plugins", "/usr/lib/cni", "directory of the reference CNI plugins (ptp, host-local, bandwidth)")
	fs.StringVar(&o.iperf3, "iperf3", "iperf3", "iperf3 binary")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "iperf3 duration of one shaping or overhead sample (whole seconds)")
	fs.IntVar(&o.repeats, "repeats", 3, "samples per case and configuration; the median is reported")
	rates := fs.String("rates", defaultRates, "comma-separated shaping targets, Mbit/s")
	streams := fs.String("streams", "1,4", "comma-separated iperf3 -P values for the shaping grid and the overhead test")
	bigStreams := fs.String("bigburst-streams", "1", "iperf3 -P values at which the big-burst reference joins the accuracy grid (its overshoot is the point; saves time)")
	latRates := fs.String("latency-rates", "10,100", "comma-separated rates (Mbit/s, each also in --rates) for the RTT-under-load probe")
	fs.DurationVar(&o.probe, "probe", 8*time.Second, "length of the RTT probe under load (one UDP echo every 50 ms)")
	fs.IntVar(&o.cniCalls, "cni-calls", 100, "ADD (then DEL) calls per configuration in the ADD latency benchmark")
	fs.Uint64Var(&o.bigBurstBits, "big-burst", math.MaxUint32, "burst (bits) of the ref-bandwidth-veth-bigburst case; the default is what containerd passes")
	fs.IntVar(&o.basePort, "base-port", 5401, "iperf3 server port")
	fs.BoolVar(&o.quick, "quick", false, "smoke mode: --duration 2s --repeats 1 --probe 3s --cni-calls 10 --latency-rates 10 unless those are given")
	cases := fs.String("cases", "all", "comma-separated subset of "+allCases)
	measures := fs.String("measure", "all", "comma-separated subset of "+allMeasures)
	fs.BoolVar(&o.cleanupOnly, "cleanup-only", false, "only remove bpdp-* namespaces left by an earlier run, then exit")
	fs.StringVar(&o.render, "render", "", "only re-render dataplane.md and the charts into --out from a saved dataplane.json (no root needed)")
	fs.BoolVar(&o.keep, "keep", false, "debugging: after measuring, keep every namespace until SIGINT/SIGTERM, then clean up and write the report")
	fs.BoolVar(&o.verbose, "v", false, "verbose logging")
	fs.StringVar(&o.buildError, "berth-build-error", "", "set by hack/perf-dataplane.sh when go build of berth-cni failed: berth cases are skipped with this reason and the exit status is 1")
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
		if !set["probe"] {
			o.probe = 3 * time.Second
		}
		if !set["cni-calls"] {
			o.cniCalls = 10
		}
		if !set["latency-rates"] {
			*latRates = "10"
		}
	}
	if o.duration < 2*time.Second {
		return o, errors.New("--duration must be at least 2s (the first second is the overshoot window)")
	}
	if o.probe < time.Second {
		return o, errors.New("--probe must be at least 1s")
	}
	if o.repeats < 1 || o.cniCalls < 1 {
		return o, errors.New("--repeats and --cni-calls must be >= 1")
	}
	if o.cniCalls > 250 {
		return o, errors.New("--cni-calls must be <= 250 (the latency pods share one /24)")
	}
	if o.bigBurstBits < 8*1514 {
		return o, errors.New("--big-burst must hold at least one frame")
	}
	var err error
	if o.rates, err = parseMbits(*rates, "rates"); err != nil {
		return o, err
	}
	if len(o.rates) > 8 {
		return o, errors.New("--rates: at most 8")
	}
	if o.latRates, err = parseMbits(*latRates, "latency-rates"); err != nil {
		return o, err
	}
	for _, lr := range o.latRates {
		found := false
		for _, r := range o.rates {
			found = found || r == lr
		}
		if !found {
			return o, fmt.Errorf("--latency-rates: %s is not in --rates", mbit(lr))
		}
	}
	if o.streams, err = parseInts(*streams, "streams"); err != nil {
		return o, err
	}
	if o.bigStreams, err = parseInts(*bigStreams, "bigburst-streams"); err != nil {
		return o, err
	}
	if o.cases, err = parseSet(*cases, allCases, "cases"); err != nil {
		return o, err
	}
	if o.measures, err = parseSet(*measures, allMeasures, "measure"); err != nil {
		return o, err
	}
	return o, nil
}

func parseInts(list, flagName string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 128 {
			return nil, fmt.Errorf("bad --%s entry %q", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// mbit formats a rate for labels: "10M", "1000M", "2.5M".
func mbit(bps uint64) string {
	return strconv.FormatFloat(float64(bps)/1e6, 'f', -1, 64) + "M"
}

// harness ties the options, the cleanup registry and the plugins together.
type harness struct {
	opts     options
	env      *perfnet.Env
	berth    perfnet.Plugin
	berthErr error
	logf     func(string, ...any)
	tmp      string // private state: IPAM, tenants registry, locks, libcni cache
	pinDir   string // private bpffs directory for berth's maps
	logDir   string
}

func (h *harness) refPlugin(name string) perfnet.Plugin {
	return perfnet.Plugin{Label: "ref", Path: filepath.Join(h.opts.refDir, name), CNIPath: h.opts.refDir}
}

func main() { os.Exit(realMain(os.Args[1:])) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func realMain(args []string) int {
	t0 := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "dataplane %6.1fs: %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
	}
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		return 2
	}
	if o.render != "" {
		return render(o.render, o.out)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "dataplane: must run as root (network namespaces, CNI plugins, bpffs)")
		return 1
	}
	// One run at a time: a second run's start-up sweep would delete the
	// first one's namespaces under its feet.
	lock, err := os.OpenFile(runLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err == nil {
		defer lock.Close()
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dataplane: another run holds %s (%v); wait for it or stop it\n", runLock, err)
		return 1
	}
	perfnet.SweepStale(nsPrefix, logf)
	sweepStalePinDirs(logf)
	if o.cleanupOnly {
		return 0
	}
	if err := preflight(&o); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		return 1
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	e := perfnet.NewEnv(nsPrefix, logf, o.verbose)
	h := &harness{opts: o, env: e, logf: logf}
	h.berth, h.berthErr = perfnet.FindBerth(o.berthBin)
	if o.buildError != "" {
		h.berthErr = fmt.Errorf("berth-cni did not build: %s", perfnet.Tail(strings.TrimSpace(o.buildError), 1500))
	}
	if h.berthErr != nil {
		logf("berth cases will be reported as skipped: %v", h.berthErr)
	}

	before := perfnet.RootLinks()
	rep := newReport(ctx, h, args, t0)
	cleaned := false
	doCleanup := func() {
		if cleaned {
			return
		}
		cleaned = true
		logf("cleaning up")
		rep.Cleanup = append(rep.Cleanup, e.Cleanup()...)
		for name := range perfnet.RootLinks() {
			if !before[name] {
				rep.Cleanup = append(rep.Cleanup, "link appeared in the root namespace during the run (this suite creates none there: a plugin or other work on the machine did): "+name)
			}
		}
		if _, err := os.Stat(h.pinDir); h.pinDir != "" && err == nil {
			rep.Cleanup = append(rep.Cleanup, "bpffs pin directory still present: "+h.pinDir)
		}
		for _, p := range rep.Cleanup {
			logf("cleanup: %s", p)
		}
	}
	// Whatever happens below (error, panic, SIGINT), undo everything.
	defer doCleanup()

	if err := h.prepare(); err != nil {
		logf("prepare: %v", err)
		rep.Fatal = err.Error()
	} else {
		rep.Params.BPFPinDir = h.pinDir
		h.run(ctx, rep)
	}
	rep.Interrupted = ctx.Err() != nil
	if o.keep && !rep.Interrupted {
		logf("--keep: namespaces %s* kept; send SIGINT (Ctrl-C) to clean up and write the report", nsPrefix)
		<-ctx.Done()
	}
	stopSignals() // a second Ctrl-C during cleanup kills us; the next run sweeps
	doCleanup()
	rep.finish(time.Now())

	files, err := writeOutputs(o.out, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane: writing report:", err)
		return 1
	}
	logf("wrote %s", strings.Join(files, ", "))
	fmt.Print(summaryText(rep))
	fmt.Printf("report: %s\n", filepath.Join(o.out, "dataplane.md"))
	switch {
	case rep.Interrupted:
		return 130
	case rep.Fatal != "":
		return 1
	case rep.referenceFailed():
		logf("a reference case failed: the harness or machine is not measuring what it should (see dataplane.md)")
		return 1
	case o.buildError != "":
		logf("berth-cni did not build; its cases were skipped (see dataplane.md)")
		return 1
	}
	return 0
}

// render rewrites the report and charts from a saved dataplane.json.
func render(in, out string) int {
	b, err := os.ReadFile(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		return 1
	}
	var r dpReport
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintf(os.Stderr, "dataplane: %s: %v\n", in, err)
		return 1
	}
	// Reports from before the reproduce line lost --berth-bin/--out.
	if rest, ok := strings.CutPrefix(r.Command, "go run ./test/perf/dataplane"); ok && !strings.ContainsAny(rest, `'"`) {
		r.Reproduce = scriptCommand(strings.Fields(rest))
	}
	r.compute()
	files, err := writeOutputs(out, &r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane: writing report:", err)
		return 1
	}
	fmt.Println(strings.Join(files, "\n"))
	return 0
}

// prepare makes the run's private directories: state under a temp dir and
// a bpffs pin directory of our own, so nothing is shared with a berth
// installation (or another test) on this machine.
func (h *harness) prepare() error {
	var err error
	if h.tmp, err = h.env.TempDir("bpdp-"); err != nil {
		return err
	}
	h.logDir = filepath.Join(h.tmp, "logs")
	if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return err
	}
	h.pinDir = "/sys/fs/bpf/" + nsPrefix + randHex(4)
	h.env.RemoveAtEnd(h.pinDir)
	return nil
}

// sweepStalePinDirs removes bpffs directories of earlier runs that were
// killed before cleanup (their namespaces are swept the same way).
func sweepStalePinDirs(logf func(string, ...any)) {
	ents, err := os.ReadDir("/sys/fs/bpf")
	if err != nil {
		return
	}
	for _, ent := range ents {
		if ent.IsDir() && strings.HasPrefix(ent.Name(), nsPrefix) {
			p := filepath.Join("/sys/fs/bpf", ent.Name())
			logf("removing stale bpffs directory %s from an earlier run", p)
			if err := os.RemoveAll(p); err != nil {
				logf("warning: %v", err)
			}
		}
	}
}

// preflight checks the tools exist before anything is created.
func preflight(o *options) error {
	for _, t := range []string{"ip", "tc", "sysctl"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (run hack/install-deps.sh)", t)
		}
	}
	p, err := exec.LookPath(o.iperf3)
	if err != nil {
		return fmt.Errorf("iperf3 not found (run hack/install-deps.sh): %v", err)
	}
	o.iperf3 = p
	for _, pl := range []string{"ptp", "host-local", "bandwidth"} {
		if _, err := os.Stat(filepath.Join(o.refDir, pl)); err != nil {
			return fmt.Errorf("reference plugin %s missing in %s (apt-get install containernetworking-plugins)", pl, o.refDir)
		}
	}
	if err := os.MkdirAll(perfnet.NetnsDir, 0o755); err != nil {
		return err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != 0xcafe4a11 {
		return errors.New("/sys/fs/bpf is not a mounted BPF filesystem (mount -t bpf bpffs /sys/fs/bpf)")
	}
	return nil
}

// run does every selected measurement. Setup of all shaping cases comes
// first; the measurements then interleave the cases sample by sample.
func (h *harness) run(ctx context.Context, rep *dpReport) {
	o := h.opts
	needShaping := o.measures["accuracy"] || o.measures["latency"]
	var cases []*shapeCase
	if needShaping {
		cases = h.setupShaping(ctx, rep)
	}
	if o.measures["accuracy"] && ctx.Err() == nil {
		h.runAccuracy(ctx, rep, cases)
	}
	if o.measures["latency"] && ctx.Err() == nil {
		h.runLatencyProbe(ctx, rep, cases)
	}
	if o.measures["overhead"] && ctx.Err() == nil {
		rep.Overhead = h.runOverhead(ctx)
	}
	if o.measures["add-latency"] && ctx.Err() == nil {
		rep.AddLatency = h.runAddLatency(ctx)
	}
}
