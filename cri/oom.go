package cri

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// oomScoreFloor is the lowest oom_score_adj the runtime may give a
// container. Lowering oom_score_adj below one's own value needs
// CAP_SYS_RESOURCE; without it (nested or restricted nodes, including the
// CI machine) runc fails every container with "failed to update
// /proc/self/oom_score_adj: Permission denied". containerd has a knob for
// this (restrict_oom_score_adj); berth-cri detects it.
func oomScoreFloor() int {
	const capSysResource = 24
	if hasCap(capSysResource) {
		return -1000
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return v
}

func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || mask&(1<<bit) != 0
		}
	}
	return true
}

// withOOMScoreFloor raises the spec's oom_score_adj to the floor.
func withOOMScoreFloor(floor int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process != nil && s.Process.OOMScoreAdj != nil && *s.Process.OOMScoreAdj < floor {
			v := floor
			s.Process.OOMScoreAdj = &v
		}
		return nil
	}
}

// watchOOMCgroup starts the cgroup OOM watch of a container whose init has
// pid (see oomwatch.go). A node where it cannot be set up (no memory
// controller, an unwritable cgroup.event_control) still has the shim's
// event: the first failure is logged at warn, later ones at debug.
func (s *Service) watchOOMCgroup(id string, pid uint32) *oomWatch {
	w, err := watchCgroupOOM(pid)
	if err != nil {
		lvl := slog.LevelDebug
		s.oomWarn.Do(func() { lvl = slog.LevelWarn })
		s.log.Log(context.Background(), lvl, "cgroup OOM watch incomplete; OOM kills are reported from the shim's events only where it fails",
			"container", id, "pid", pid, "err", err)
	}
	return w
}

// oomKilled decides whether a container's exit was an OOM kill, and
// closes its cgroup watch. The shim's TaskOOM event counts as containerd's
// CRI counts it; otherwise the cgroup's evidence decides (oomwatch.go), and
// only without any does the exit wait briefly for a late event.
func (s *Service) oomKilled(c *container, code uint32) bool {
	c.mu.Lock()
	w, eventOOM, killing := c.oomw, c.oom, c.killing
	c.mu.Unlock()
	defer w.close()
	// Only a SIGKILL (137) can be the kernel's OOM kill of the init
	// process. When berth-cri sent that SIGKILL itself there is nothing
	// to wait for.
	sigkill := code == 128+uint32(syscall.SIGKILL)
	if eventOOM {
		// What the cgroup says too, without waiting: the log then shows
		// whether the two routes agree on this node.
		cg := "no cgroup watch"
		if w != nil {
			v, e := w.decide(sigkill, 0)
			cg = v.String() + " [" + e.String() + "]"
		}
		s.log.Info("container OOM-killed", "container", c.ID, "exitCode", code, "evidence", "shim TaskOOM event", "cgroup", cg)
		return true
	}
	if code == 0 {
		return false
	}
	if w != nil {
		var patience time.Duration
		if sigkill && !killing {
			patience = time.Second
		}
		v, e := w.decide(sigkill, patience)
		switch v {
		case oomYes:
			s.log.Info("container OOM-killed", "container", c.ID, "exitCode", code, "evidence", e.String())
			return true
		case oomNo, oomMaybe:
			s.log.Debug("container exit is not an OOM kill", "container", c.ID, "exitCode", code, "evidence", e.String())
			return s.lateOOMEvent(c, false)
		}
	}
	// No evidence from the cgroup: the event and the exit travel
	// separately, so a SIGKILL exit with a memory limit gives the event a
	// moment to land first.
	return s.lateOOMEvent(c, sigkill && c.Config.GetLinux().GetResources().GetMemoryLimitInBytes() > 0)
}

// lateOOMEvent reports whether the shim's OOM event has arrived, waiting
// up to 200 ms for it when wait is set.
func (s *Service) lateOOMEvent(c *container, wait bool) bool {
	for i := 0; ; i++ {
		c.mu.Lock()
		oom := c.oom
		c.mu.Unlock()
		if oom || !wait || i == 20 {
			if oom {
				s.log.Info("container OOM-killed", "container", c.ID, "evidence", "shim TaskOOM event")
			}
			return oom
		}
		time.Sleep(10 * time.Millisecond)
	}
}
