package cri

import (
	"context"
	"encoding/json"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/cri/spec"
)

// ContainerStatus reports a container's cached state.
func (s *Service) ContainerStatus(ctx context.Context, r *runtime.ContainerStatusRequest) (*runtime.ContainerStatusResponse, error) {
	c, err := s.lookupContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp := &runtime.ContainerStatusResponse{Status: containerStatus(c, s.imageNames)}
	if r.GetVerbose() {
		st := c.status()
		info, _ := json.Marshal(map[string]any{"sandboxID": st.SandboxID, "pid": st.Pid, "imageRef": st.ImageRef, "logPath": st.LogPath})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// imageNamer gives the repo tag and repo digest of an image ID, empty
// when it has none.
type imageNamer func(imageID string) (tag, digest string)

// imageNames is the Service's imageNamer.
func (s *Service) imageNames(id string) (string, string) {
	if s.images == nil {
		return "", ""
	}
	return s.images.DisplayNames(id)
}

func containerStatus(c *container, names imageNamer) *runtime.ContainerStatus {
	st := c.status()
	cfg := st.Config
	// kubelet asks for the image by ID; the status names it by its tag
	// and its digest reference when it has them (as containerd's CRI does),
	// so that the pod status says "busybox:1.36", not "sha256:…".
	image, imageRef := st.ImageRef, st.ImageID
	if names != nil {
		tag, digest := names(st.ImageID)
		if tag != "" {
			image = tag
		}
		if digest != "" {
			imageRef = digest
		}
	}
	out := &runtime.ContainerStatus{
		Id:          st.ID,
		Metadata:    cfg.GetMetadata(),
		State:       st.State,
		CreatedAt:   st.CreatedAt,
		StartedAt:   st.StartedAt,
		FinishedAt:  st.FinishedAt,
		ExitCode:    st.ExitCode,
		Image:       &runtime.ImageSpec{Image: image, Annotations: cfg.GetImage().GetAnnotations(), UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    imageRef,
		ImageId:     st.ImageID,
		Reason:      st.Reason,
		Message:     st.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      cfg.GetMounts(),
		LogPath:     st.LogPath,
		User:        st.User,
	}
	if r := cfg.GetLinux().GetResources(); r != nil {
		out.Resources = &runtime.ContainerResources{Linux: r}
	}
	return out
}

// ListContainers lists containers matching the filter.
func (s *Service) ListContainers(ctx context.Context, r *runtime.ListContainersRequest) (*runtime.ListContainersResponse, error) {
	return &runtime.ListContainersResponse{Containers: s.listContainers(r.GetFilter())}, nil
}

func (s *Service) listContainers(f *runtime.ContainerFilter) []*runtime.Container {
	var out []*runtime.Container
	for _, c := range s.containers.list() {
		st := c.status()
		if !filterMatch(st.ID, f.GetId(), st.SandboxID, f.GetPodSandboxId(), st.Config.GetLabels(), f.GetLabelSelector()) ||
			(f.GetState() != nil && f.GetState().GetState() != st.State) {
			continue
		}
		out = append(out, &runtime.Container{
			Id: st.ID, PodSandboxId: st.SandboxID, Metadata: st.Config.GetMetadata(),
			Image: &runtime.ImageSpec{Image: st.ImageRef, UserSpecifiedImage: st.Config.GetImage().GetUserSpecifiedImage()}, ImageRef: st.ImageID, ImageId: st.ImageID,
			State: st.State, CreatedAt: st.CreatedAt,
			Labels: st.Config.GetLabels(), Annotations: st.Config.GetAnnotations(),
		})
	}
	return out
}

// StreamContainers is the streaming form of ListContainers.
func (s *Service) StreamContainers(r *runtime.StreamContainersRequest, srv grpc.ServerStreamingServer[runtime.StreamContainersResponse]) error {
	return srv.Send(&runtime.StreamContainersResponse{Containers: s.listContainers(r.GetFilter())})
}

// UpdateContainerResources applies new limits to the running task and
// records them in the stored spec, so they survive a restart of the task.
func (s *Service) UpdateContainerResources(ctx context.Context, r *runtime.UpdateContainerResourcesRequest) (*runtime.UpdateContainerResourcesResponse, error) {
	c, err := s.lookupContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	ctx = s.nsCtx(ctx)
	lr := r.GetLinux()
	if lr == nil {
		return &runtime.UpdateContainerResourcesResponse{}, nil
	}
	// The stored spec gets the new limits through the same code that built
	// it; the running task gets that spec's resources block.
	var res *specs.LinuxResources
	err = c.cntr.Update(ctx, func(ctx context.Context, client *containerd.Client, info *containers.Container) error {
		sp, err := c.cntr.Spec(ctx)
		if err != nil {
			return err
		}
		if err := spec.WithResources(lr)(ctx, client, info, sp); err != nil {
			return err
		}
		res = sp.Linux.Resources
		return containerd.WithSpec(sp)(ctx, client, info)
	})
	if err != nil {
		return nil, errorf(err, "update spec of container %s", c.ID)
	}
	if c.status().State == runtime.ContainerState_CONTAINER_RUNNING {
		task, err := c.cntr.Task(ctx, nil)
		if err == nil {
			err = task.Update(ctx, containerd.WithResources(res))
		}
		if err != nil && !isNotFound(err) {
			return nil, errorf(err, "update resources of container %s", c.ID)
		}
	}
	c.mu.Lock()
	if c.Config.Linux == nil {
		c.Config.Linux = &runtime.LinuxContainerConfig{}
	}
	c.Config.Linux.Resources = lr
	c.mu.Unlock()
	return &runtime.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog reopens the log file after kubelet rotated it.
func (s *Service) ReopenContainerLog(ctx context.Context, r *runtime.ReopenContainerLogRequest) (*runtime.ReopenContainerLogResponse, error) {
	c, err := s.lookupContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c.status().State != runtime.ContainerState_CONTAINER_RUNNING {
		return nil, errorf(errNotRunning(c.ID), "reopen log")
	}
	if err := c.io.reopenLog(); err != nil {
		return nil, errorf(err, "reopen log of container %s", c.ID)
	}
	return &runtime.ReopenContainerLogResponse{}, nil
}

type errNotRunning string

func (e errNotRunning) Error() string { return "container " + string(e) + " is not running" }

// CheckpointContainer needs CRIU, which this runtime does not ship.
func (s *Service) CheckpointContainer(ctx context.Context, r *runtime.CheckpointContainerRequest) (*runtime.CheckpointContainerResponse, error) {
	return nil, unimplemented("CheckpointContainer: container checkpointing (CRIU) is not supported by berth-cri")
}
