package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/moby/sys/signal"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/cri/spec"
)

func containerKey(sandboxID string, md *runtime.ContainerMetadata) string {
	return fmt.Sprintf("%s/%s/%d", sandboxID, md.GetName(), md.GetAttempt())
}

// CreateContainer creates an application container in a sandbox.
func (s *Service) CreateContainer(ctx context.Context, r *runtime.CreateContainerRequest) (*runtime.CreateContainerResponse, error) {
	sb, err := s.lookupSandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sbCfg := r.GetSandboxConfig()
	if sbCfg == nil {
		sbCfg = sb.Config
	}
	if err := spec.ValidateContainerConfig(r.GetConfig(), sbCfg); err != nil {
		return nil, err
	}
	key := containerKey(sb.ID, r.GetConfig().GetMetadata())
	id, err := s.inflight.do(ctx, "container/"+key, func(ctx context.Context) (string, error) {
		if c := s.findContainerByKey(key); c != nil {
			// A retry after the first call succeeded gets the same ID.
			return c.ID, nil
		}
		ctx, cancel := context.WithTimeout(s.nsCtx(ctx), 4*time.Minute)
		defer cancel()
		return s.createContainer(ctx, sb, r.GetConfig(), sbCfg)
	})
	if err != nil {
		return nil, err
	}
	return &runtime.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Service) findContainerByKey(key string) *container {
	for _, c := range s.containers.list() {
		if containerKey(c.SandboxID, c.Config.GetMetadata()) == key {
			return c
		}
	}
	return nil
}

func (s *Service) createContainer(ctx context.Context, sb *sandbox, cfg *runtime.ContainerConfig, sbCfg *runtime.PodSandboxConfig) (_ string, retErr error) {
	snap := sb.snapshot()
	if snap.State != runtime.PodSandboxState_SANDBOX_READY {
		return "", errorf(fmt.Errorf("sandbox %s is not ready", sb.ID), "create container")
	}
	id := newID()
	var u undo
	defer func() {
		if retErr != nil {
			u.run(context.WithoutCancel(ctx), s.log.Warn)
		}
	}()
	img, err := s.images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		if isNotFound(err) {
			return "", notFound("image", cfg.GetImage().GetImage())
		}
		return "", errorf(err, "resolve image %q", cfg.GetImage().GetImage())
	}
	// An image imported by another client may not be unpacked for our
	// snapshotter yet.
	if err := s.images.EnsureUnpacked(ctx, img); err != nil {
		return "", errorf(err, "unpack image %q", cfg.GetImage().GetImage())
	}
	logPath := ""
	if dir, p := sbCfg.GetLogDirectory(), cfg.GetLogPath(); dir != "" && p != "" {
		logPath = filepath.Join(dir, p)
	}
	in := spec.Sandbox{ID: sb.ID, Config: snap.Config, Pid: snap.Pid, NetNSPath: snap.NetNSPath,
		HostnamePath: filepath.Join(s.sandboxRootDir(sb.ID), "hostname"),
		HostsPath:    filepath.Join(s.sandboxRootDir(sb.ID), "hosts"),
		ResolvPath:   filepath.Join(s.sandboxRootDir(sb.ID), "resolv.conf"),
		ShmPath:      s.shmPath(sb)}
	specOpts, err := spec.ContainerOpts(id, cfg, in, img.Config, img.Name, s.rt, s.targetPid)
	if err != nil {
		return "", err
	}
	// The last option sees the finished spec: keeping it spares a Get RPC
	// to read back what was just written.
	var finalSpec *oci.Spec
	specOpts = append(specOpts, withOOMScoreFloor(s.oomFloor), func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		finalSpec = sp
		return nil
	})
	uids, gids, _ := spec.UsernsMappings("sandbox userns_options", snap.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions())
	stateDir := s.containerStateDir(id)
	cio, err := newContainerIO(filepath.Join(stateDir, "io"), id, cfg.GetTty(), cfg.GetStdin(), cfg.GetStdinOnce(), logPath, s.cfg.MaxContainerLogLineSize)
	if err != nil {
		return "", errorf(err, "create container FIFOs")
	}
	u.push(func(context.Context) error { cio.close(); return os.RemoveAll(stateDir) })

	labels := map[string]string{}
	for k, v := range cfg.GetLabels() {
		labels[k] = v
	}
	labels[labelKind] = kindContainer
	labels[labelSandboxID] = sb.ID
	labels[labelState] = stateCreated
	now := nowNano()
	m := &meta{Kind: kindContainer, ID: id, SandboxID: sb.ID, Config: marshalConfig(cfg), CreatedAt: now,
		ImageRef: cfg.GetImage().GetImage(), ImageID: img.ID, LogPath: logPath}
	cntr, err := s.client.NewContainer(ctx, id,
		containerd.WithSnapshotter(s.cfg.Snapshotter),
		// The snapshot must exist before the spec: user and group
		// resolution reads /etc/passwd and /etc/group from it.
		containerd.WithNewSnapshot(id, img.CDImage, remapOpts(uids, gids)...),
		containerd.WithImageName(img.Name),
		containerd.WithNewSpec(specOpts...),
		containerd.WithRuntime("io.containerd.runc.v2", s.runcOptions()),
		containerd.WithContainerLabels(labels),
		containerd.WithContainerExtension(extMeta, m),
	)
	if err != nil {
		return "", errorf(err, "create container")
	}
	c := &container{ID: id, SandboxID: sb.ID, Config: cfg, CreatedAt: now,
		State: runtime.ContainerState_CONTAINER_CREATED, ImageRef: cfg.GetImage().GetImage(),
		ImageID: img.ID, LogPath: logPath, User: spec.UserFromSpec(finalSpec), io: cio,
		exited: make(chan struct{}), cntr: cntr}
	s.containers.add(id, c)
	s.events.container(c, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	return id, nil
}

// shmPath is the sandbox's /dev/shm source (the host's for host IPC).
func (s *Service) shmPath(sb *sandbox) string {
	if sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtime.NamespaceMode_NODE {
		return "/dev/shm"
	}
	return filepath.Join(s.sandboxStateDir(sb.ID), "shm")
}

// targetPid resolves the pid namespace target of NamespaceMode_TARGET.
func (s *Service) targetPid(id string) (uint32, error) {
	c, ok := s.containers.get(id)
	if !ok {
		return 0, notFound("container", id)
	}
	st := c.status()
	if st.State != runtime.ContainerState_CONTAINER_RUNNING {
		return 0, invalid("target container %s is not running", id)
	}
	return st.Pid, nil
}

// StartContainer starts a created container.
func (s *Service) StartContainer(ctx context.Context, r *runtime.StartContainerRequest) (*runtime.StartContainerResponse, error) {
	c, err := s.lookupContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	ctx = s.nsCtx(ctx)
	c.mu.Lock()
	if c.State == runtime.ContainerState_CONTAINER_RUNNING {
		c.mu.Unlock()
		return &runtime.StartContainerResponse{}, nil
	}
	if c.State != runtime.ContainerState_CONTAINER_CREATED || c.Starting {
		st := c.State
		c.mu.Unlock()
		return nil, errorf(fmt.Errorf("container %s is in state %s, not CREATED", c.ID, st), "start container")
	}
	c.Starting = true
	c.mu.Unlock()
	err = s.startContainer(ctx, c)
	c.mu.Lock()
	c.Starting = false
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &runtime.StartContainerResponse{}, nil
}

func (s *Service) startContainer(ctx context.Context, c *container) error {
	sb, ok := s.sandboxes.get(c.SandboxID)
	if !ok || sb.snapshot().State != runtime.PodSandboxState_SANDBOX_READY {
		return errorf(fmt.Errorf("sandbox %s is not ready", c.SandboxID), "start container %s", c.ID)
	}
	task, err := c.cntr.NewTask(ctx, c.io.creator(ctx))
	if err != nil {
		s.recordStartFailure(ctx, c, err)
		return errorf(err, "create task for container %s", c.ID)
	}
	// runc has put the paused init in the container's cgroup: watch it
	// before the process runs, so even an immediate OOM is seen.
	oomw := s.watchOOMCgroup(c.ID, task.Pid())
	c.mu.Lock()
	c.oomw = oomw
	c.mu.Unlock()
	exitCh, err := task.Wait(s.waitCtx())
	if err != nil {
		oomw.close()
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return errorf(err, "wait task for container %s", c.ID)
	}
	if err := task.Start(ctx); err != nil {
		oomw.close()
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		s.recordStartFailure(ctx, c, err)
		return errorf(err, "start container %s", c.ID)
	}
	c.io.setTaskCloser(s.stdinCloser(task))
	now := nowNano()
	c.mu.Lock()
	c.StartedAt = now
	c.Pid = task.Pid()
	c.State = runtime.ContainerState_CONTAINER_RUNNING
	c.mu.Unlock()
	// Recording the start is one metadata write (a bolt commit with
	// fsync) that StartContainer need not wait for: recovery treats a
	// "created" record whose task runs as running, and the exit record,
	// written under the same lock, carries started-at too.
	go func() {
		c.labelMu.Lock()
		defer c.labelMu.Unlock()
		if c.status().State != runtime.ContainerState_CONTAINER_RUNNING {
			return
		}
		if _, err := c.cntr.SetLabels(s.waitCtx(), map[string]string{labelState: stateRunning, labelStarted: itoa64(now)}); err != nil {
			s.log.Warn("record container start", "container", c.ID, "err", err)
		}
	}()
	s.monitorContainer(c, task, exitCh)
	s.events.container(c, runtime.ContainerEventType_CONTAINER_STARTED_EVENT)
	return nil
}

// recordStartFailure marks a container that could not start as exited with
// the runtime's message, as kubelet expects (reason StartError, code 128).
func (s *Service) recordStartFailure(ctx context.Context, c *container, err error) {
	now := nowNano()
	c.mu.Lock()
	c.State = runtime.ContainerState_CONTAINER_EXITED
	c.FinishedAt = now
	c.ExitCode = 128
	c.Reason = "StartError"
	c.Message = err.Error()
	c.mu.Unlock()
	msg := err.Error()
	if len(msg) > 2048 {
		msg = msg[:2048]
	}
	_, _ = c.cntr.SetLabels(ctx, map[string]string{labelState: stateExited, labelFinished: itoa64(now),
		labelExitCode: "128", labelReason: "StartError", labelMessage: msg})
	c.io.closeStdin()
}

// monitorContainer records the exit in containerd (labels) before the task
// is deleted, so the exit code survives a berth-cri restart.
func (s *Service) monitorContainer(c *container, task containerd.Task, exitCh <-chan containerd.ExitStatus) {
	go func() {
		var es containerd.ExitStatus
		select {
		case es = <-exitCh:
		case <-s.stopCh:
			return
		}
		s.handleExit(c, task, es.ExitCode(), es.ExitTime())
	}()
}

func (s *Service) handleExit(c *container, task containerd.Task, code uint32, at time.Time) {
	ctx := s.nsCtx(context.Background())
	c.io.waitDrained(2 * time.Second)
	oom := s.oomKilled(c, code)
	if at.IsZero() {
		at = time.Now()
	}
	c.mu.Lock()
	c.State = runtime.ContainerState_CONTAINER_EXITED
	c.FinishedAt = at.UnixNano()
	c.ExitCode = int32(code)
	switch {
	case oom:
		c.Reason = "OOMKilled"
	case code == 0:
		c.Reason = "Completed"
	default:
		c.Reason = "Error"
	}
	labels := map[string]string{labelState: stateExited, labelFinished: itoa64(c.FinishedAt),
		labelExitCode: fmt.Sprint(code), labelReason: c.Reason, labelStarted: itoa64(c.StartedAt)}
	c.mu.Unlock()
	c.labelMu.Lock()
	if _, err := c.cntr.SetLabels(ctx, labels); err != nil {
		s.log.Warn("record container exit", "container", c.ID, "err", err)
	}
	c.labelMu.Unlock()
	if task != nil {
		if _, err := task.Delete(ctx); err != nil && !isNotFound(err) {
			s.log.Warn("delete container task", "container", c.ID, "err", err)
		}
	}
	select {
	case <-c.exited:
	default:
		close(c.exited)
	}
	s.events.container(c, runtime.ContainerEventType_CONTAINER_STOPPED_EVENT)
}

// StopContainer sends the stop signal, waits up to the timeout, then kills.
func (s *Service) StopContainer(ctx context.Context, r *runtime.StopContainerRequest) (*runtime.StopContainerResponse, error) {
	if r.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	c, ok := s.containers.get(r.GetContainerId())
	if !ok {
		// Stopping is idempotent: kubelet retries Stop after a restart
		// or a removal raced it, and a gone container is stopped.
		return &runtime.StopContainerResponse{}, nil
	}
	if err := s.stopContainer(s.nsCtx(ctx), c, time.Duration(r.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtime.StopContainerResponse{}, nil
}

func (s *Service) stopContainer(ctx context.Context, c *container, timeout time.Duration) error {
	st := c.status()
	if st.State != runtime.ContainerState_CONTAINER_RUNNING {
		if st.State == runtime.ContainerState_CONTAINER_CREATED {
			// Never started: nothing runs, but it must not start later.
			return nil
		}
		return nil
	}
	task, err := c.cntr.Task(ctx, nil)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return errorf(err, "load task of container %s", c.ID)
	}
	if timeout > 0 {
		sig := s.stopSignal(ctx, c)
		if err := task.Kill(ctx, sig); err != nil && !isNotFound(err) {
			return errorf(err, "signal container %s", c.ID)
		}
		select {
		case <-c.exited:
			return nil
		case <-time.After(timeout):
		case <-ctx.Done():
			return errorf(ctx.Err(), "stop container %s", c.ID)
		}
	}
	c.mu.Lock()
	c.killing = true
	c.mu.Unlock()
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !isNotFound(err) {
		return errorf(err, "kill container %s", c.ID)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(60 * time.Second):
		return errorf(fmt.Errorf("container %s did not exit after SIGKILL", c.ID), "stop container")
	case <-ctx.Done():
		return errorf(ctx.Err(), "stop container %s", c.ID)
	}
}

// stopSignal is the image's STOPSIGNAL, else SIGTERM.
func (s *Service) stopSignal(ctx context.Context, c *container) syscall.Signal {
	if img, err := s.images.Get(ctx, c.ImageID); err == nil && img.Config.StopSignal != "" {
		if sig, err := signal.ParseSignal(strings.TrimSpace(img.Config.StopSignal)); err == nil {
			return sig
		}
	}
	return syscall.SIGTERM
}

// RemoveContainer removes a container; a running one is killed first.
func (s *Service) RemoveContainer(ctx context.Context, r *runtime.RemoveContainerRequest) (*runtime.RemoveContainerResponse, error) {
	if r.GetContainerId() == "" {
		return nil, invalid("container_id is required")
	}
	c, ok := s.containers.get(r.GetContainerId())
	if !ok {
		return &runtime.RemoveContainerResponse{}, nil
	}
	if err := s.removeContainer(s.nsCtx(ctx), c); err != nil {
		return nil, err
	}
	return &runtime.RemoveContainerResponse{}, nil
}

func (s *Service) removeContainer(ctx context.Context, c *container) error {
	if err := s.stopContainer(ctx, c, 0); err != nil {
		return err
	}
	if task, err := c.cntr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !isNotFound(err) {
			return errorf(err, "delete task of container %s", c.ID)
		}
	}
	if err := c.cntr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !isNotFound(err) {
		return errorf(err, "delete container %s", c.ID)
	}
	c.io.close()
	c.mu.Lock()
	c.oomw.close()
	c.mu.Unlock()
	_ = os.RemoveAll(s.containerStateDir(c.ID))
	s.containers.delete(c.ID)
	s.events.container(c, runtime.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// stdinCloser closes a task's stdin in the shim (StdinOnce attach).
func (s *Service) stdinCloser(task containerd.Task) func() {
	return func() {
		ctx, cancel := context.WithTimeout(s.waitCtx(), 10*time.Second)
		defer cancel()
		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil && !isNotFound(err) {
			s.log.Warn("close container stdin", "task", task.ID(), "err", err)
		}
	}
}
