package perfnet

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a report was made.
type Machine struct {
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
	Berth         BerthInfo         `json:"berth"`
	GitCommit     string            `json:"gitCommit,omitempty"`
	NetworkSysctl map[string]string `json:"sysctl"`
	LoadAvgStart  string            `json:"loadavgStart"`
	LoadAvgEnd    string            `json:"loadavgEnd"`
	CPUBusyPct    float64           `json:"cpuBusyPct"`  // all CPUs, whole run, everything on the machine
	CPUStealPct   float64           `json:"cpuStealPct"` // hypervisor steal over the run
	cpuStart      CPUTimes
}

// BerthInfo identifies the berth-cni binary that was measured.
type BerthInfo struct {
	Path     string `json:"path"`
	Present  bool   `json:"present"`
	Error    string `json:"error,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Modified string `json:"modified,omitempty"`
	Version  string `json:"cniVersionCommand,omitempty"`
}

// MachineOpts says which tools and plugins to describe.
type MachineOpts struct {
	Iperf3    string
	RefPlugin Plugin // a reference plugin to ask for VERSION
	RefName   string // its name in the tools table ("reference macvlan plugin")
	BerthFlag string // the --berth-bin value as given
	Berth     Plugin
	BerthErr  error
}

// CollectMachine reads the machine description and starts the CPU
// accounting that End finishes.
func CollectMachine(ctx context.Context, t0 time.Time, o MachineOpts) Machine {
	m := Machine{
		Kernel:      ReadTrim("/proc/sys/kernel/osrelease"),
		KernelBuild: ReadTrim("/proc/sys/kernel/version"),
		OS:          OSRelease(),
		CPUs:        runtime.NumCPU(),
		CPUModel:    CPUModel(),
		MemTotal:    MemTotal(),
		Date:        t0.UTC().Format(time.RFC3339),
		GoVersion:   runtime.Version(),
		Tools:       map[string]string{},
		NetworkSysctl: map[string]string{
			"net.core.default_qdisc":            ReadTrim("/proc/sys/net/core/default_qdisc"),
			"net.ipv4.tcp_congestion_control":   ReadTrim("/proc/sys/net/ipv4/tcp_congestion_control"),
			"net.core.rmem_max":                 ReadTrim("/proc/sys/net/core/rmem_max"),
			"net.core.wmem_max":                 ReadTrim("/proc/sys/net/core/wmem_max"),
			"bridge-nf-call-iptables (root ns)": ReadTrim("/proc/sys/net/bridge/bridge-nf-call-iptables"),
		},
	}
	m.Hostname, _ = os.Hostname()
	m.LoadAvgStart = LoadAvg()
	m.cpuStart = ReadCPUTimes()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if o.Iperf3 != "" {
		if out, err := exec.CommandContext(cctx, o.Iperf3, "--version").Output(); err == nil {
			m.Tools["iperf3"] = FirstLine(string(out))
		}
	}
	if out, err := exec.CommandContext(cctx, "ip", "-V").Output(); err == nil {
		m.Tools["iproute2"] = FirstLine(string(out))
	}
	if out, err := exec.CommandContext(cctx, "dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins").Output(); err == nil {
		m.Tools["containernetworking-plugins (deb)"] = strings.TrimSpace(string(out))
	}
	if o.RefPlugin.Path != "" {
		m.Tools[o.RefName] = o.RefPlugin.Version(cctx)
	}
	if out, err := exec.CommandContext(cctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.GitCommit = strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(cctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.GitCommit += " + uncommitted changes"
		}
	}
	m.Berth.Path = o.BerthFlag
	if o.BerthErr != nil {
		m.Berth.Error = o.BerthErr.Error()
	} else {
		m.Berth.Present = true
		if st, err := os.Stat(o.Berth.Path); err == nil {
			m.Berth.Size = st.Size()
			m.Berth.Modified = st.ModTime().UTC().Format(time.RFC3339)
		}
		m.Berth.SHA256 = FileSHA256(o.Berth.Path)
		m.Berth.Version = o.Berth.Version(cctx)
	}
	return m
}

// End records the load average and CPU use since CollectMachine.
func (m *Machine) End() {
	m.LoadAvgEnd = LoadAvg()
	m.CPUBusyPct, m.CPUStealPct = m.cpuStart.UsageSince(ReadCPUTimes())
}

// ReadTrim reads a small file, trimmed; "" on error.
func ReadTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// FirstLine is the first line of s, trimmed.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// CPUModel is /proc/cpuinfo's first "model name".
func CPUModel() string {
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

// MemTotal is /proc/meminfo's MemTotal.
func MemTotal() string {
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

// OSRelease is /etc/os-release's PRETTY_NAME.
func OSRelease() string {
	for _, l := range strings.Split(ReadTrim("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

// FileSHA256 is the hex SHA-256 of a file ("" on error).
func FileSHA256(p string) string {
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

// LoadAvg is the 1, 5 and 15 minute load average.
func LoadAvg() string {
	f := strings.Fields(ReadTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// CPUTimes is the aggregate "cpu" line of /proc/stat.
type CPUTimes struct{ total, idle, steal uint64 }

// ReadCPUTimes reads /proc/stat.
func ReadCPUTimes() CPUTimes {
	for _, l := range strings.Split(ReadTrim("/proc/stat"), "\n") {
		f := strings.Fields(l)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var t CPUTimes
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
	return CPUTimes{}
}

// UsageSince returns busy% and steal% between two readings.
func (a CPUTimes) UsageSince(b CPUTimes) (busy, steal float64) {
	dt := float64(b.total - a.total)
	if a.total == 0 || dt <= 0 {
		return 0, 0
	}
	return 100 * (dt - float64(b.idle-a.idle)) / dt, 100 * float64(b.steal-a.steal) / dt
}
