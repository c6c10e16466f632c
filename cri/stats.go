package cri

import (
	"context"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStats reports CPU, memory and writable-layer usage.
func (s *Service) ContainerStats(ctx context.Context, r *runtime.ContainerStatsRequest) (*runtime.ContainerStatsResponse, error) {
	if r.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	c, ok := s.containers.get(r.GetContainerId())
	if !ok {
		return nil, notFound("container", r.GetContainerId())
	}
	return &runtime.ContainerStatsResponse{Stats: s.containerStats(s.nsCtx(ctx), c)}, nil
}

func (s *Service) containerStats(ctx context.Context, c *container) *runtime.ContainerStats {
	st := c.status()
	now := time.Now().UnixNano()
	out := &runtime.ContainerStats{
		Attributes: &runtime.ContainerAttributes{Id: st.ID, Metadata: st.Config.GetMetadata(),
			Labels: st.Config.GetLabels(), Annotations: st.Config.GetAnnotations()},
		Cpu:           &runtime.CpuUsage{Timestamp: now},
		Memory:        &runtime.MemoryUsage{Timestamp: now},
		WritableLayer: &runtime.FilesystemUsage{Timestamp: now, FsId: &runtime.FilesystemIdentifier{}},
	}
	if u, err := s.client.SnapshotService(s.cfg.Snapshotter).Usage(ctx, st.ID); err == nil {
		out.WritableLayer.UsedBytes = &runtime.UInt64Value{Value: uint64(u.Size)}
		out.WritableLayer.InodesUsed = &runtime.UInt64Value{Value: uint64(u.Inodes)}
	}
	if st.State != runtime.ContainerState_CONTAINER_RUNNING {
		return out
	}
	task, err := c.cntr.Task(ctx, nil)
	if err != nil {
		return out
	}
	cpu, mem := s.taskUsage(ctx, task)
	if cpu != nil {
		out.Cpu = cpu
	}
	if mem != nil {
		out.Memory = mem
	}
	return out
}

// taskUsage decodes a task's cgroup metrics, v1 or v2.
func (s *Service) taskUsage(ctx context.Context, task containerd.Task) (*runtime.CpuUsage, *runtime.MemoryUsage) {
	if task == nil {
		return nil, nil
	}
	m, err := task.Metrics(ctx)
	if err != nil || m == nil || m.Data == nil {
		return nil, nil
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return nil, nil
	}
	ts := m.Timestamp.AsTime().UnixNano()
	switch mt := v.(type) {
	case *v1.Metrics:
		var cpu *runtime.CpuUsage
		if mt.CPU != nil && mt.CPU.Usage != nil {
			cpu = &runtime.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtime.UInt64Value{Value: mt.CPU.Usage.Total}}
		}
		var mem *runtime.MemoryUsage
		if mt.Memory != nil && mt.Memory.Usage != nil {
			ws := mt.Memory.Usage.Usage
			if ws > mt.Memory.TotalInactiveFile {
				ws -= mt.Memory.TotalInactiveFile
			} else {
				ws = 0
			}
			mem = &runtime.MemoryUsage{Timestamp: ts,
				WorkingSetBytes: &runtime.UInt64Value{Value: ws},
				UsageBytes:      &runtime.UInt64Value{Value: mt.Memory.Usage.Usage},
				RssBytes:        &runtime.UInt64Value{Value: mt.Memory.TotalRSS},
				PageFaults:      &runtime.UInt64Value{Value: mt.Memory.TotalPgFault},
				MajorPageFaults: &runtime.UInt64Value{Value: mt.Memory.TotalPgMajFault},
			}
			if lim := mt.Memory.Usage.Limit; lim > 0 && lim < 1<<62 {
				mem.AvailableBytes = &runtime.UInt64Value{Value: lim - min(lim, ws)}
			}
		}
		return cpu, mem
	case *v2.Metrics:
		var cpu *runtime.CpuUsage
		if mt.CPU != nil {
			cpu = &runtime.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtime.UInt64Value{Value: mt.CPU.UsageUsec * 1000}}
		}
		var mem *runtime.MemoryUsage
		if mt.Memory != nil {
			ws := mt.Memory.Usage
			if ws > mt.Memory.InactiveFile {
				ws -= mt.Memory.InactiveFile
			}
			mem = &runtime.MemoryUsage{Timestamp: ts, WorkingSetBytes: &runtime.UInt64Value{Value: ws},
				UsageBytes: &runtime.UInt64Value{Value: mt.Memory.Usage},
				RssBytes:   &runtime.UInt64Value{Value: mt.Memory.Anon},
				PageFaults: &runtime.UInt64Value{Value: mt.Memory.Pgfault}, MajorPageFaults: &runtime.UInt64Value{Value: mt.Memory.Pgmajfault}}
		}
		return cpu, mem
	}
	return nil, nil
}

// ListContainerStats reports stats for every container matching the filter.
func (s *Service) ListContainerStats(ctx context.Context, r *runtime.ListContainerStatsRequest) (*runtime.ListContainerStatsResponse, error) {
	return &runtime.ListContainerStatsResponse{Stats: s.listContainerStats(s.nsCtx(ctx), r.GetFilter())}, nil
}

func (s *Service) listContainerStats(ctx context.Context, f *runtime.ContainerStatsFilter) []*runtime.ContainerStats {
	var out []*runtime.ContainerStats
	for _, c := range s.containers.list() {
		st := c.status()
		if f != nil {
			if f.GetId() != "" && !hasPrefix(st.ID, f.GetId()) {
				continue
			}
			if f.GetPodSandboxId() != "" && !hasPrefix(st.SandboxID, f.GetPodSandboxId()) {
				continue
			}
			if !matchLabels(st.Config.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		out = append(out, s.containerStats(ctx, c))
	}
	return out
}

func (s *Service) StreamContainerStats(r *runtime.StreamContainerStatsRequest, srv grpc.ServerStreamingServer[runtime.StreamContainerStatsResponse]) error {
	return srv.Send(&runtime.StreamContainerStatsResponse{ContainerStats: s.listContainerStats(s.nsCtx(srv.Context()), r.GetFilter())})
}

// PodSandboxStats sums the pod's containers and reads the pod's interfaces.
func (s *Service) PodSandboxStats(ctx context.Context, r *runtime.PodSandboxStatsRequest) (*runtime.PodSandboxStatsResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, ok := s.sandboxes.get(r.GetPodSandboxId())
	if !ok {
		return nil, notFound("pod sandbox", r.GetPodSandboxId())
	}
	return &runtime.PodSandboxStatsResponse{Stats: s.sandboxStats(s.nsCtx(ctx), sb)}, nil
}

func (s *Service) sandboxStats(ctx context.Context, sb *sandbox) *runtime.PodSandboxStats {
	snap := sb.snapshot()
	now := time.Now().UnixNano()
	out := &runtime.PodSandboxStats{
		Attributes: &runtime.PodSandboxAttributes{Id: snap.ID, Metadata: snap.Config.GetMetadata(),
			Labels: snap.Config.GetLabels(), Annotations: snap.Config.GetAnnotations()},
		Linux: &runtime.LinuxPodSandboxStats{
			Cpu:    &runtime.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtime.UInt64Value{}},
			Memory: &runtime.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtime.UInt64Value{}, UsageBytes: &runtime.UInt64Value{}, RssBytes: &runtime.UInt64Value{}},
		},
	}
	for _, c := range s.containers.list() {
		if c.SandboxID != sb.ID {
			continue
		}
		cs := s.containerStats(ctx, c)
		out.Linux.Containers = append(out.Linux.Containers, cs)
		if v := cs.GetCpu().GetUsageCoreNanoSeconds(); v != nil {
			out.Linux.Cpu.UsageCoreNanoSeconds.Value += v.Value
		}
		if m := cs.GetMemory(); m != nil {
			out.Linux.Memory.WorkingSetBytes.Value += m.GetWorkingSetBytes().GetValue()
			out.Linux.Memory.UsageBytes.Value += m.GetUsageBytes().GetValue()
			out.Linux.Memory.RssBytes.Value += m.GetRssBytes().GetValue()
		}
	}
	if snap.NetNSPath != "" && snap.State == runtime.PodSandboxState_SANDBOX_READY {
		out.Linux.Network = netStats(snap.NetNSPath, now)
	}
	return out
}

// netStats reads interface counters inside the pod's netns.
func netStats(path string, ts int64) *runtime.NetworkUsage {
	var usage *runtime.NetworkUsage
	_ = ns.WithNetNSPath(path, func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		usage = &runtime.NetworkUsage{Timestamp: ts}
		for _, l := range links {
			a := l.Attrs()
			if a.Name == "lo" || a.Statistics == nil {
				continue
			}
			is := &runtime.NetworkInterfaceUsage{Name: a.Name,
				RxBytes: &runtime.UInt64Value{Value: a.Statistics.RxBytes}, RxErrors: &runtime.UInt64Value{Value: a.Statistics.RxErrors},
				TxBytes: &runtime.UInt64Value{Value: a.Statistics.TxBytes}, TxErrors: &runtime.UInt64Value{Value: a.Statistics.TxErrors}}
			if a.Name == "eth0" {
				usage.DefaultInterface = is
			} else {
				usage.Interfaces = append(usage.Interfaces, is)
			}
		}
		return nil
	})
	return usage
}

func (s *Service) ListPodSandboxStats(ctx context.Context, r *runtime.ListPodSandboxStatsRequest) (*runtime.ListPodSandboxStatsResponse, error) {
	return &runtime.ListPodSandboxStatsResponse{Stats: s.listSandboxStats(s.nsCtx(ctx), r.GetFilter())}, nil
}

func (s *Service) listSandboxStats(ctx context.Context, f *runtime.PodSandboxStatsFilter) []*runtime.PodSandboxStats {
	var out []*runtime.PodSandboxStats
	for _, sb := range s.sandboxes.list() {
		if f != nil {
			if f.GetId() != "" && !hasPrefix(sb.ID, f.GetId()) {
				continue
			}
			if !matchLabels(sb.Config.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		out = append(out, s.sandboxStats(ctx, sb))
	}
	return out
}

func (s *Service) StreamPodSandboxStats(r *runtime.StreamPodSandboxStatsRequest, srv grpc.ServerStreamingServer[runtime.StreamPodSandboxStatsResponse]) error {
	return srv.Send(&runtime.StreamPodSandboxStatsResponse{PodSandboxStats: s.listSandboxStats(s.nsCtx(srv.Context()), r.GetFilter())})
}

// ListMetricDescriptors and ListPodSandboxMetrics serve kubelet's
// PodAndContainerStatsFromCRI mode. berth-cri reports stats through the
// *Stats RPCs and leaves the Prometheus-style metric set empty, which
// kubelet accepts (cAdvisor remains the source in the default mode).
func (s *Service) ListMetricDescriptors(ctx context.Context, r *runtime.ListMetricDescriptorsRequest) (*runtime.ListMetricDescriptorsResponse, error) {
	return &runtime.ListMetricDescriptorsResponse{}, nil
}

func (s *Service) ListPodSandboxMetrics(ctx context.Context, r *runtime.ListPodSandboxMetricsRequest) (*runtime.ListPodSandboxMetricsResponse, error) {
	return &runtime.ListPodSandboxMetricsResponse{}, nil
}

func (s *Service) StreamPodSandboxMetrics(r *runtime.StreamPodSandboxMetricsRequest, srv grpc.ServerStreamingServer[runtime.StreamPodSandboxMetricsResponse]) error {
	return srv.Send(&runtime.StreamPodSandboxMetricsResponse{})
}
