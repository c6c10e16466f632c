package cri

import (
	"context"
	"os"
	"strconv"
	"strings"

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
