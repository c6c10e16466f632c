package spec

import (
	"context"
	"strconv"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox (pause) defaults, the same as containerd's: the pause process
// needs almost no CPU, and the OOM killer should pick anything else first
// because killing it tears down the whole pod.
const (
	sandboxCPUShares   = 2
	sandboxOOMScoreAdj = -998
)

// withResources copies the CRI resources into linux.resources. Zero values
// mean "not set" in CRI and are left out, so the cgroup keeps the parent's
// setting. UpdateContainerResources can reuse it on a copy of the spec.
func withResources(r *runtime.LinuxContainerResources) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if r == nil {
			return nil
		}
		res := ensureResources(s)
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		if res.Memory == nil {
			res.Memory = &specs.LinuxMemory{}
		}
		if p := r.GetCpuPeriod(); p != 0 {
			v := uint64(p)
			res.CPU.Period = &v
		}
		if q := r.GetCpuQuota(); q != 0 {
			res.CPU.Quota = &q
		}
		if sh := r.GetCpuShares(); sh != 0 {
			v := uint64(sh)
			res.CPU.Shares = &v
		}
		if c := r.GetCpusetCpus(); c != "" {
			res.CPU.Cpus = c
		}
		if m := r.GetCpusetMems(); m != "" {
			res.CPU.Mems = m
		}
		host := probeHost()
		if limit := r.GetMemoryLimitInBytes(); limit != 0 {
			res.Memory.Limit = &limit
			// memory+swap equal to memory means "no swap", which is what
			// kubelet means when it sets no swap limit. Without swap
			// accounting the file does not exist and runc would fail.
			if r.GetMemorySwapLimitInBytes() == 0 && host.swap {
				v := limit
				res.Memory.Swap = &v
			}
		}
		if sw := r.GetMemorySwapLimitInBytes(); sw != 0 && host.swap {
			res.Memory.Swap = &sw
		}
		// kubelet sends a limit for every huge page size of the node, also
		// when the pod asks for none. Without the hugetlb controller
		// (common on cgroup v1 hosts) they are dropped, as containerd does
		// by default (tolerate_missing_hugetlb_controller).
		if host.hugetlb {
			for _, h := range r.GetHugepageLimits() {
				res.HugepageLimits = append(res.HugepageLimits, specs.LinuxHugepageLimit{
					Pagesize: h.GetPageSize(),
					Limit:    h.GetLimit(),
				})
			}
		}
		if u := r.GetUnified(); len(u) > 0 {
			if res.Unified == nil {
				res.Unified = make(map[string]string, len(u))
			}
			for k, v := range u {
				res.Unified[k] = v
			}
		}
		return nil
	}
}

// withOOMScoreAdj sets the process's oom_score_adj.
func withOOMScoreAdj(adj int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		s.Process.OOMScoreAdj = &adj
		return nil
	}
}

// withCPUShares sets cpu.shares.
func withCPUShares(shares uint64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		res := ensureResources(s)
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		res.CPU.Shares = &shares
		return nil
	}
}

// sandboxResourceAnnotations passes the pod-level totals kubelet computes
// (sum of the containers' requests/limits) to the runtime as annotations,
// as containerd does; VM-based shims size the VM from them.
func sandboxResourceAnnotations(r *runtime.LinuxContainerResources) oci.SpecOpts {
	return oci.WithAnnotations(map[string]string{
		AnnotationSandboxCPUPeriod: strconv.FormatInt(r.GetCpuPeriod(), 10),
		AnnotationSandboxCPUQuota:  strconv.FormatInt(r.GetCpuQuota(), 10),
		AnnotationSandboxCPUShares: strconv.FormatInt(r.GetCpuShares(), 10),
		AnnotationSandboxMemory:    strconv.FormatInt(r.GetMemoryLimitInBytes(), 10),
	})
}

func ensureResources(s *specs.Spec) *specs.LinuxResources {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	return s.Linux.Resources
}
