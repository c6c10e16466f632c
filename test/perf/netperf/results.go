package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

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

type machineInfo struct {
	Kernel        string            `json:"kernel"`
	KernelBuild   string            `json:"kernelBuild"`
	OS            string            `json:"os"`
	CPUs          int               `json:"cpus"`
	CPUModel      string            `json:"cpuModel"`
	MemTotal      string            `json:"memTotal"`
	Hostname      string            `json:"hostname"`
	Date          string            `json:"date"`
	GoVersion     string            `json:"goVersion"`
	Tools         map[string]string `json:"tools"`
	Berth         berthInfo         `json:"berth"`
	GitCommit     string            `json:"gitCommit,omitempty"`
	NetworkSysctl map[string]string `json:"sysctl"`
	LoadAvgStart  string            `json:"loadavgStart"`
	LoadAvgEnd    string            `json:"loadavgEnd"`
	CPUBusyPct    float64           `json:"cpuBusyPct"`  // all CPUs, whole run, everything on the machine
	CPUStealPct   float64           `json:"cpuStealPct"` // hypervisor steal over the run
	cpuStart      cpuTimes
}

type berthInfo struct {
	Path     string `json:"path"`
	Present  bool   `json:"present"`
	Error    string `json:"error,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Modified string `json:"modified,omitempty"`
	Version  string `json:"cniVersionCommand,omitempty"`
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

type streamResult struct {
	Streams    int           `json:"streams"`
	Samples    []iperfSample `json:"samples"`
	MedianGbps *float64      `json:"medianGbps"`
	MinGbps    *float64      `json:"minGbps"`
	MaxGbps    *float64      `json:"maxGbps"`
	Errors     int           `json:"errors"`
}

func (s *streamResult) gbps() []float64 {
	var xs []float64
	for _, x := range s.Samples {
		if x.Error == "" {
			xs = append(xs, x.Gbps)
		}
	}
	return xs
}

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

func fptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
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
	m := machineInfo{
		Kernel:      readTrim("/proc/sys/kernel/osrelease"),
		KernelBuild: readTrim("/proc/sys/kernel/version"),
		OS:          osRelease(),
		CPUs:        runtime.NumCPU(),
		CPUModel:    cpuModel(),
		MemTotal:    memTotal(),
		Date:        t0.UTC().Format(time.RFC3339),
		GoVersion:   runtime.Version(),
		Tools:       map[string]string{},
		NetworkSysctl: map[string]string{
			"net.core.default_qdisc":            readTrim("/proc/sys/net/core/default_qdisc"),
			"net.ipv4.tcp_congestion_control":   readTrim("/proc/sys/net/ipv4/tcp_congestion_control"),
			"net.core.rmem_max":                 readTrim("/proc/sys/net/core/rmem_max"),
			"net.core.wmem_max":                 readTrim("/proc/sys/net/core/wmem_max"),
			"bridge-nf-call-iptables (root ns)": readTrim("/proc/sys/net/bridge/bridge-nf-call-iptables"),
		},
	}
	m.Hostname, _ = os.Hostname()
	m.LoadAvgStart = loadAvg()
	m.cpuStart = readCPUTimes()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, o.iperf3, "--version").Output(); err == nil {
		m.Tools["iperf3"] = firstLine(string(out))
	}
	if out, err := exec.CommandContext(cctx, "ip", "-V").Output(); err == nil {
		m.Tools["iproute2"] = firstLine(string(out))
	}
	if out, err := exec.CommandContext(cctx, "dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins").Output(); err == nil {
		m.Tools["containernetworking-plugins (deb)"] = strings.TrimSpace(string(out))
	}
	m.Tools["reference macvlan plugin"] = h.refPlugin("macvlan").version(cctx)
	if out, err := exec.CommandContext(cctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.GitCommit = strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(cctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.GitCommit += " + uncommitted changes"
		}
	}
	m.Berth.Path = o.berthBin
	if h.berthErr != nil {
		m.Berth.Error = h.berthErr.Error()
	} else {
		m.Berth.Present = true
		if st, err := os.Stat(h.berth.Path); err == nil {
			m.Berth.Size = st.Size()
			m.Berth.Modified = st.ModTime().UTC().Format(time.RFC3339)
		}
		m.Berth.SHA256 = fileSHA256(h.berth.Path)
		m.Berth.Version = h.berth.version(cctx)
	}
	r.Machine = m
	return r
}

// finish computes medians and ratios.
func (r *netReport) finish(t time.Time) {
	r.Finished = t
	r.Machine.LoadAvgEnd = loadAvg()
	r.Machine.CPUBusyPct, r.Machine.CPUStealPct = r.Machine.cpuStart.usageSince(readCPUTimes())
	for _, c := range r.Throughput {
		for _, s := range c.Streams {
			xs := s.gbps()
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

// displayArgs drops --berth-build-error and its value (the compiler's
// output, shown elsewhere in the report) from the command line we print.
func displayArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--berth-build-error" || a == "-berth-build-error":
			i++
		case strings.HasPrefix(a, "--berth-build-error=") || strings.HasPrefix(a, "-berth-build-error="):
		default:
			out = append(out, a)
		}
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "target met"
	}
	return "target missed"
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
	if len(ns.gbps()) >= 2 && len(ds.gbps()) >= 2 {
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

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotal() string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "MemTotal" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func osRelease() string {
	for _, l := range strings.Split(readTrim("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

func fileSHA256(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return ""
	}
	return hex.EncodeToString(hs.Sum(nil))
}

func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuTimes is the aggregate "cpu" line of /proc/stat.
type cpuTimes struct{ total, idle, steal uint64 }

func readCPUTimes() cpuTimes {
	for _, l := range strings.Split(readTrim("/proc/stat"), "\n") {
		f := strings.Fields(l)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var t cpuTimes
		for i, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			if i >= 8 { // guest time is already counted in user
				break
			}
			t.total += v
			switch i {
			case 3, 4: // idle, iowait
				t.idle += v
			case 7:
				t.steal += v
			}
		}
		return t
	}
	return cpuTimes{}
}

// usageSince returns busy% and steal% between two readings.
func (a cpuTimes) usageSince(b cpuTimes) (busy, steal float64) {
	dt := float64(b.total - a.total)
	if a.total == 0 || dt <= 0 {
		return 0, 0
	}
	return 100 * (dt - float64(b.idle-a.idle)) / dt, 100 * float64(b.steal-a.steal) / dt
}
