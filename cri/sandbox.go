package cri

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/netns"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopPodSandbox stops every container of the pod, the pause process, and
// tears down the network. It is idempotent, and a missing sandbox is OK.
func (s *Service) StopPodSandbox(ctx context.Context, r *runtime.StopPodSandboxRequest) (*runtime.StopPodSandboxResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, ok := s.sandboxes.get(r.GetPodSandboxId())
	if !ok {
		return &runtime.StopPodSandboxResponse{}, nil
	}
	if err := s.stopSandbox(s.nsCtx(ctx), sb); err != nil {
		return nil, err
	}
	return &runtime.StopPodSandboxResponse{}, nil
}

func (s *Service) stopSandbox(ctx context.Context, sb *sandbox) error {
	for _, c := range s.containers.list() {
		if c.SandboxID != sb.ID {
			continue
		}
		if err := s.stopContainer(ctx, c, 0); err != nil {
			return err
		}
	}
	if task, err := sb.cntr.Task(ctx, nil); err == nil {
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !isNotFound(err) {
			return errorf(err, "kill sandbox %s", sb.ID)
		}
		select {
		case <-sb.exited:
		case <-time.After(30 * time.Second):
			return errorf(context.DeadlineExceeded, "sandbox %s did not exit", sb.ID)
		case <-ctx.Done():
			return errorf(ctx.Err(), "stop sandbox %s", sb.ID)
		}
	} else if !isNotFound(err) {
		return errorf(err, "load sandbox task %s", sb.ID)
	}
	sb.mu.Lock()
	sb.State = runtime.PodSandboxState_SANDBOX_NOTREADY
	sb.mu.Unlock()
	if err := s.teardownNetwork(ctx, sb); err != nil {
		return err
	}
	_ = unmountAll(s.sandboxStateDir(sb.ID) + "/shm")
	return nil
}

// teardownNetwork runs CNI DEL once and removes the netns. A DEL that fails
// is recorded in the container's labels, so it is retried by the background
// loop, by the next Stop or Remove, and after a restart, and the address is
// never leaked.
func (s *Service) teardownNetwork(ctx context.Context, sb *sandbox) error {
	snap := sb.snapshot()
	if snap.NetNSPath == "" {
		return nil
	}
	if _, err := os.Stat(snap.NetNSPath); err != nil && !snap.CNIPending {
		// Already torn down by an earlier Stop.
		if os.IsNotExist(err) {
			return nil
		}
	}
	if err := s.cni.teardown(ctx, sb, s.cni.runtimeConf(sb, s.cfg.TenantKey)); err != nil {
		sb.mu.Lock()
		sb.CNIPending = true
		sb.mu.Unlock()
		if _, lerr := sb.cntr.SetLabels(ctx, map[string]string{labelCNI: "pending"}); lerr != nil {
			s.log.Warn("record pending CNI teardown", "sandbox", sb.ID, "err", lerr)
		}
		return errorf(err, "tear down pod network (CNI DEL) for sandbox %s", sb.ID)
	}
	sb.mu.Lock()
	wasPending := sb.CNIPending
	sb.CNIPending = false
	sb.mu.Unlock()
	if wasPending {
		if _, err := sb.cntr.SetLabels(ctx, map[string]string{labelCNI: ""}); err != nil {
			s.log.Warn("clear pending CNI teardown", "sandbox", sb.ID, "err", err)
		}
	}
	if err := netns.LoadNetNS(snap.NetNSPath).Remove(); err != nil && !os.IsNotExist(err) {
		return errorf(err, "remove netns %s", snap.NetNSPath)
	}
	return nil
}

// retryTeardowns retries owed CNI DELs every 30 seconds.
func (s *Service) retryTeardowns() {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
		}
		for _, sb := range s.sandboxes.list() {
			if sb.snapshot().CNIPending {
				ctx := s.nsCtx(context.Background())
				if err := s.teardownNetwork(ctx, sb); err != nil {
					s.log.Warn("CNI teardown retry failed", "sandbox", sb.ID, "err", err)
				} else {
					s.log.Info("owed CNI teardown done", "sandbox", sb.ID)
				}
			}
		}
	}
}

// RemovePodSandbox removes the sandbox and every container in it.
func (s *Service) RemovePodSandbox(ctx context.Context, r *runtime.RemovePodSandboxRequest) (*runtime.RemovePodSandboxResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, invalid("pod_sandbox_id is required")
	}
	sb, ok := s.sandboxes.get(r.GetPodSandboxId())
	if !ok {
		return &runtime.RemovePodSandboxResponse{}, nil
	}
	if err := s.removeSandbox(s.nsCtx(ctx), sb); err != nil {
		return nil, err
	}
	return &runtime.RemovePodSandboxResponse{}, nil
}

func (s *Service) removeSandbox(ctx context.Context, sb *sandbox) error {
	ctx = s.nsCtx(ctx)
	if err := s.stopSandbox(ctx, sb); err != nil {
		return err
	}
	for _, c := range s.containers.list() {
		if c.SandboxID == sb.ID {
			if err := s.removeContainer(ctx, c); err != nil {
				return err
			}
		}
	}
	if err := sb.cntr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !isNotFound(err) {
		return errorf(err, "delete sandbox container %s", sb.ID)
	}
	_ = os.RemoveAll(s.sandboxRootDir(sb.ID))
	_ = os.RemoveAll(s.sandboxStateDir(sb.ID))
	s.sandboxes.delete(sb.ID)
	s.events.sandbox(sb, runtime.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// PodSandboxStatus reports the cached state of a sandbox.
func (s *Service) PodSandboxStatus(ctx context.Context, r *runtime.PodSandboxStatusRequest) (*runtime.PodSandboxStatusResponse, error) {
	sb, err := s.lookupSandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	st := sandboxStatus(sb)
	resp := &runtime.PodSandboxStatusResponse{Status: st, Timestamp: time.Now().UnixNano()}
	for _, c := range s.containers.list() {
		if c.SandboxID == sb.ID {
			resp.ContainersStatuses = append(resp.ContainersStatuses, containerStatus(c, s.imageNames))
		}
	}
	if r.GetVerbose() {
		snap := sb.snapshot()
		info, _ := json.Marshal(map[string]any{
			"pid": snap.Pid, "netNamespacePath": snap.NetNSPath, "runtimeHandler": snap.Handler,
			"cniPending": snap.CNIPending, "image": s.cfg.PauseImage,
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func sandboxStatus(sb *sandbox) *runtime.PodSandboxStatus {
	snap := sb.snapshot()
	cfg := snap.Config
	st := &runtime.PodSandboxStatus{
		Id:             snap.ID,
		Metadata:       cfg.GetMetadata(),
		State:          snap.State,
		CreatedAt:      snap.CreatedAt,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: snap.Handler,
		Linux: &runtime.LinuxPodSandboxStatus{Namespaces: &runtime.Namespace{
			Options: namespaceOptionsOrDefault(cfg),
		}},
	}
	if !sb.hostNetwork() {
		st.Network = &runtime.PodSandboxNetworkStatus{Ip: snap.IP}
		for _, ip := range snap.ExtraIPs {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtime.PodIP{Ip: ip})
		}
	}
	return st
}

func namespaceOptionsOrDefault(cfg *runtime.PodSandboxConfig) *runtime.NamespaceOption {
	if o := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); o != nil {
		return o
	}
	return &runtime.NamespaceOption{}
}

// ListPodSandbox lists sandboxes matching the filter.
func (s *Service) ListPodSandbox(ctx context.Context, r *runtime.ListPodSandboxRequest) (*runtime.ListPodSandboxResponse, error) {
	return &runtime.ListPodSandboxResponse{Items: s.listSandboxes(r.GetFilter())}, nil
}

func (s *Service) listSandboxes(f *runtime.PodSandboxFilter) []*runtime.PodSandbox {
	var out []*runtime.PodSandbox
	for _, sb := range s.sandboxes.list() {
		snap := sb.snapshot()
		if !filterMatch(snap.ID, f.GetId(), "", "", snap.Config.GetLabels(), f.GetLabelSelector()) ||
			(f.GetState() != nil && f.GetState().GetState() != snap.State) {
			continue
		}
		out = append(out, &runtime.PodSandbox{
			Id: snap.ID, Metadata: snap.Config.GetMetadata(), State: snap.State,
			CreatedAt: snap.CreatedAt, Labels: snap.Config.GetLabels(),
			Annotations: snap.Config.GetAnnotations(), RuntimeHandler: snap.Handler,
		})
	}
	return out
}

// StreamPodSandboxes is the streaming form of ListPodSandbox (kubelet's
// CRIListStreaming gate); one message carries the whole list.
func (s *Service) StreamPodSandboxes(r *runtime.StreamPodSandboxesRequest, srv grpc.ServerStreamingServer[runtime.StreamPodSandboxesResponse]) error {
	return srv.Send(&runtime.StreamPodSandboxesResponse{PodSandboxes: s.listSandboxes(r.GetFilter())})
}

// UpdatePodSandboxResources is informational for runc pods: the container
// cgroups carry the limits kubelet sets through UpdateContainerResources.
func (s *Service) UpdatePodSandboxResources(ctx context.Context, r *runtime.UpdatePodSandboxResourcesRequest) (*runtime.UpdatePodSandboxResourcesResponse, error) {
	if _, ok := s.sandboxes.get(r.GetPodSandboxId()); !ok {
		return nil, notFound("pod sandbox", r.GetPodSandboxId())
	}
	return &runtime.UpdatePodSandboxResourcesResponse{}, nil
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// filterMatch is the part every CRI list filter shares: an ID prefix, the
// owning sandbox's ID prefix (empty for sandboxes) and a label selector.
func filterMatch(id, idPrefix, sandboxID, sandboxPrefix string, labels, selector map[string]string) bool {
	return hasPrefix(id, idPrefix) && hasPrefix(sandboxID, sandboxPrefix) && matchLabels(labels, selector)
}

func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
