package perfnet

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Host is the machine part of a report's environment, shared by the CRI
// and CSI reports (embedded in their Env, so their JSON keeps these keys at
// the top level). Start it with CollectHost and finish it with End.
type Host struct {
	Date         string  `json:"date"`
	Hostname     string  `json:"hostname"`
	Kernel       string  `json:"kernel"`
	OS           string  `json:"os"`
	CPUs         int     `json:"cpus"`
	CPUModel     string  `json:"cpuModel"`
	MemTotal     string  `json:"memTotal"`
	GoVersion    string  `json:"goVersion"`
	GitCommit    string  `json:"gitCommit,omitempty"`
	LoadAvgStart string  `json:"loadavgStart"`
	LoadAvgEnd   string  `json:"loadavgEnd"`
	CPUBusyPct   float64 `json:"cpuBusyPct"`  // all CPUs, whole run, everything on the machine
	CPUStealPct  float64 `json:"cpuStealPct"` // hypervisor steal over the run
	cpuStart     CPUTimes
}

// CollectHost describes the machine, and the commit checked out in repo
// (marked when tracked files have uncommitted changes), and starts the CPU
// accounting.
func CollectHost(t0 time.Time, repo string) Host {
	h := Host{
		Date:         t0.UTC().Format(time.RFC3339),
		Kernel:       ReadTrim("/proc/sys/kernel/osrelease"),
		OS:           OSRelease(),
		CPUs:         runtime.NumCPU(),
		CPUModel:     CPUModel(),
		MemTotal:     MemTotal(),
		GoVersion:    runtime.Version(),
		LoadAvgStart: LoadAvg(),
		cpuStart:     ReadCPUTimes(),
	}
	h.Hostname, _ = os.Hostname()
	h.GitCommit = GitCommit(repo)
	return h
}

// End records the load average and CPU use since CollectHost.
func (h *Host) End() {
	h.LoadAvgEnd = LoadAvg()
	h.CPUBusyPct, h.CPUStealPct = h.cpuStart.UsageSince(ReadCPUTimes())
}

// Rows are the Markdown environment table's machine rows.
func (h Host) Rows() [][]string {
	return [][]string{
		{"date", h.Date},
		{"kernel", h.Kernel},
		{"OS", h.OS},
		{"CPUs", fmt.Sprintf("%d × %s", h.CPUs, h.CPUModel)},
		{"memory", h.MemTotal},
	}
}

// GitCommit is repo's HEAD, short, with " + uncommitted changes" when
// tracked files differ; "" outside a git checkout.
func GitCommit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " + uncommitted changes"
	}
	return c
}
