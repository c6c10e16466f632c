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
	c, err := s.lookupContainer(r.GetContainerId())
	if err != nil {
		return nil, err
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
	// kubelet resolves the writable layer's mountpoint to a device and
	// gives up on the node's whole stats summary (and with it eviction)
	// when it is empty, so name the snapshotter's root, as ImageFsInfo does.
	if root, err := s.images.SnapshotterRoot(ctx); err == nil {
		out.WritableLayer.FsId.Mountpoint = root
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
		// Stats are polled constantly; say why they are missing once, at
		// warn, and every time at debug.
		s.metricsWarn.Do(func() {
			s.log.Warn("container metrics unavailable from the shim (later failures are logged at debug)", "err", err)
		})
		s.log.Debug("container metrics unavailable", "err", err)
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
		if !filterMatch(st.ID, f.GetId(), st.SandboxID, f.GetPodSandboxId(), st.Config.GetLabels(), f.GetLabelSelector()) {
			continue
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
	sb, err := s.lookupSandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
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
		if !filterMatch(sb.ID, f.GetId(), "", "", sb.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, s.sandboxStats(ctx, sb))
	}
	return out
}

func (s *Service) StreamPodSandboxStats(r *runtime.StreamPodSandboxStatsRequest, srv grpc.ServerStreamingServer[runtime.StreamPodSandboxStatsResponse]) error {
	return srv.Send(&runtime.StreamPodSandboxStatsResponse{PodSandboxStats: s.listSandboxStats(s.nsCtx(srv.Context()), r.GetFilter())})
}

// The metric set served to kubelet's PodAndContainerStatsFromCRI mode:
// cAdvisor's names and label keys, so dashboards built on cAdvisor keep
// working, computed from the same cgroup and interface counters as the
// *Stats RPCs.
var (
	containerLabelKeys = []string{"container", "id", "image", "name", "namespace", "pod"}
	netLabelKeys       = []string{"interface", "namespace", "pod"}
	metricDescriptors  = []*runtime.MetricDescriptor{
		{Name: "container_cpu_usage_seconds_total", Help: "Cumulative cpu time consumed in seconds.", LabelKeys: containerLabelKeys},
		{Name: "container_memory_usage_bytes", Help: "Current memory usage in bytes, including all memory regardless of when it was accessed.", LabelKeys: containerLabelKeys},
		{Name: "container_memory_working_set_bytes", Help: "Current working set in bytes.", LabelKeys: containerLabelKeys},
		{Name: "container_memory_rss", Help: "Size of RSS in bytes.", LabelKeys: containerLabelKeys},
		{Name: "container_fs_usage_bytes", Help: "Number of bytes that are consumed by the container's writable layer.", LabelKeys: containerLabelKeys},
		{Name: "container_network_receive_bytes_total", Help: "Cumulative count of bytes received.", LabelKeys: netLabelKeys},
		{Name: "container_network_transmit_bytes_total", Help: "Cumulative count of bytes transmitted.", LabelKeys: netLabelKeys},
	}
)

func (s *Service) ListMetricDescriptors(ctx context.Context, r *runtime.ListMetricDescriptorsRequest) (*runtime.ListMetricDescriptorsResponse, error) {
	return &runtime.ListMetricDescriptorsResponse{Descriptors: metricDescriptors}, nil
}

func (s *Service) ListPodSandboxMetrics(ctx context.Context, r *runtime.ListPodSandboxMetricsRequest) (*runtime.ListPodSandboxMetricsResponse, error) {
	return &runtime.ListPodSandboxMetricsResponse{PodMetrics: s.podMetrics(s.nsCtx(ctx))}, nil
}

func (s *Service) StreamPodSandboxMetrics(r *runtime.StreamPodSandboxMetricsRequest, srv grpc.ServerStreamingServer[runtime.StreamPodSandboxMetricsResponse]) error {
	return srv.Send(&runtime.StreamPodSandboxMetricsResponse{PodSandboxMetrics: s.podMetrics(s.nsCtx(srv.Context()))})
}

func (s *Service) podMetrics(ctx context.Context) []*runtime.PodSandboxMetrics {
	var out []*runtime.PodSandboxMetrics
	for _, sb := range s.sandboxes.list() {
		snap := sb.snapshot()
		if snap.State != runtime.PodSandboxState_SANDBOX_READY {
			continue
		}
		stats := s.sandboxStats(ctx, sb)
		md := snap.Config.GetMetadata()
		pm := &runtime.PodSandboxMetrics{PodSandboxId: snap.ID}
		metric := func(name string, t runtime.MetricType, ts int64, v uint64, labels ...string) *runtime.Metric {
			return &runtime.Metric{Name: name, Timestamp: ts, MetricType: t, LabelValues: labels, Value: &runtime.UInt64Value{Value: v}}
		}
		if n := stats.GetLinux().GetNetwork(); n != nil {
			ifaces := append([]*runtime.NetworkInterfaceUsage{n.GetDefaultInterface()}, n.GetInterfaces()...)
			for _, i := range ifaces {
				if i == nil {
					continue
				}
				pm.Metrics = append(pm.Metrics,
					metric("container_network_receive_bytes_total", runtime.MetricType_COUNTER, n.Timestamp, i.GetRxBytes().GetValue(), i.GetName(), md.GetNamespace(), md.GetName()),
					metric("container_network_transmit_bytes_total", runtime.MetricType_COUNTER, n.Timestamp, i.GetTxBytes().GetValue(), i.GetName(), md.GetNamespace(), md.GetName()))
			}
		}
		for _, cs := range stats.GetLinux().GetContainers() {
			a := cs.GetAttributes()
			c, ok := s.containers.get(a.GetId())
			if !ok {
				continue
			}
			st := c.status()
			labels := []string{a.GetMetadata().GetName(), a.GetId(), st.ImageRef, a.GetId(), md.GetNamespace(), md.GetName()}
			cm := &runtime.ContainerMetrics{ContainerId: a.GetId()}
			if cpu := cs.GetCpu(); cpu.GetUsageCoreNanoSeconds() != nil {
				// CRI metric values are integers: whole seconds, as
				// cAdvisor's float would be truncated anyway by kubelet.
				cm.Metrics = append(cm.Metrics, metric("container_cpu_usage_seconds_total", runtime.MetricType_COUNTER, cpu.Timestamp, cpu.GetUsageCoreNanoSeconds().GetValue()/1e9, labels...))
			}
			if m := cs.GetMemory(); m != nil {
				cm.Metrics = append(cm.Metrics,
					metric("container_memory_usage_bytes", runtime.MetricType_GAUGE, m.Timestamp, m.GetUsageBytes().GetValue(), labels...),
					metric("container_memory_working_set_bytes", runtime.MetricType_GAUGE, m.Timestamp, m.GetWorkingSetBytes().GetValue(), labels...),
					metric("container_memory_rss", runtime.MetricType_GAUGE, m.Timestamp, m.GetRssBytes().GetValue(), labels...))
			}
			if w := cs.GetWritableLayer(); w.GetUsedBytes() != nil {
				cm.Metrics = append(cm.Metrics, metric("container_fs_usage_bytes", runtime.MetricType_GAUGE, w.Timestamp, w.GetUsedBytes().GetValue(), labels...))
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
		}
		out = append(out, pm)
	}
	return out
}
