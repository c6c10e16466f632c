package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/cri/spec"
)

// recover rebuilds the caches from containerd after a (re)start. containerd
// holds the truth: container records with berth's labels and extension,
// and the shim holds each task's state and, for a task that exited while
// berth-cri was down, its exit status until the task is deleted.
func (s *Service) recover(ctx context.Context) error {
	cs, err := s.client.Containers(ctx, fmt.Sprintf(`labels."%s"`, labelKind))
	if err != nil {
		return err
	}
	var sbs, ctrs []containerd.Container
	for _, c := range cs {
		info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			continue
		}
		switch info.Labels[labelKind] {
		case kindSandbox:
			sbs = append(sbs, c)
		case kindContainer:
			ctrs = append(ctrs, c)
		}
	}
	for _, c := range sbs {
		if err := s.recoverSandbox(ctx, c); err != nil {
			s.log.Error("recover sandbox", "sandbox", c.ID(), "err", err)
		}
	}
	for _, c := range ctrs {
		if err := s.recoverContainer(ctx, c); err != nil {
			s.log.Error("recover container", "container", c.ID(), "err", err)
		}
	}
	s.sweepOrphanNetNS()
	if len(cs) > 0 {
		s.log.Info("recovered state from containerd", "sandboxes", len(s.sandboxes.list()), "containers", len(s.containers.list()))
	}
	return nil
}

func (s *Service) recoverSandbox(ctx context.Context, c containerd.Container) error {
	m, labels, err := loadMeta(ctx, c)
	if err != nil {
		return err
	}
	cfg := &runtime.PodSandboxConfig{}
	if err := proto.Unmarshal(m.Config, cfg); err != nil {
		return fmt.Errorf("decode sandbox config: %w", err)
	}
	sb := &sandbox{ID: m.ID, Config: cfg, CreatedAt: m.CreatedAt, NetNSPath: m.NetNSPath,
		Handler: m.RuntimeHandler, State: runtime.PodSandboxState_SANDBOX_NOTREADY,
		IP: labels[labelIP], CNIPending: labels[labelCNI] == "pending",
		exited: make(chan struct{}), cntr: c}
	if v := labels[labelNetNS]; v != "" {
		sb.NetNSPath = v
	}
	if v := labels[labelIPs]; v != "" {
		sb.ExtraIPs = strings.Split(v, ",")
	}
	s.sandboxes.add(sb.ID, sb)
	if labels[labelState] == stateCreating {
		// berth-cri died inside RunPodSandbox: finish the rollback it
		// never ran. The sandbox stays listed as NOTREADY with its network
		// torn down, so kubelet removes it and creates a new attempt.
		s.log.Warn("sandbox was being created when berth-cri stopped; tearing it down", "sandbox", sb.ID)
		if task, err := c.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
		if err := s.teardownNetwork(ctx, sb); err != nil {
			s.log.Warn("teardown of interrupted sandbox failed; will retry", "sandbox", sb.ID, "err", err)
		}
		close(sb.exited)
		return nil
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		close(sb.exited)
		return nil
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		close(sb.exited)
		return nil
	}
	exitCh, err := task.Wait(s.waitCtx())
	if err != nil {
		return err
	}
	sb.Pid = task.Pid()
	sb.State = runtime.PodSandboxState_SANDBOX_READY
	s.monitorSandbox(sb, task, exitCh)
	return nil
}

func (s *Service) recoverContainer(ctx context.Context, c containerd.Container) error {
	m, labels, err := loadMeta(ctx, c)
	if err != nil {
		return err
	}
	cfg := &runtime.ContainerConfig{}
	if err := proto.Unmarshal(m.Config, cfg); err != nil {
		return fmt.Errorf("decode container config: %w", err)
	}
	ctr := &container{ID: m.ID, SandboxID: m.SandboxID, Config: cfg, CreatedAt: m.CreatedAt,
		StartedAt: atoi64(labels[labelStarted]), FinishedAt: atoi64(labels[labelFinished]),
		ExitCode: int32(atoi64(labels[labelExitCode])), Reason: labels[labelReason], Message: labels[labelMessage],
		ImageRef: m.ImageRef, ImageID: m.ImageID, LogPath: m.LogPath,
		exited: make(chan struct{}), cntr: c}
	if sp, err := c.Spec(ctx); err == nil {
		ctr.User = spec.UserFromSpec(sp)
	}
	ioDir := filepath.Join(s.containerStateDir(ctr.ID), "io")
	state := labels[labelState]
	if state == stateCreated {
		// The start record is written after StartContainer returns; a
		// task that exists means the start happened.
		if _, err := c.Task(ctx, nil); err == nil {
			state = stateRunning
		}
	}
	switch state {
	case stateCreated:
		ctr.State = runtime.ContainerState_CONTAINER_CREATED
		// The FIFOs of a never-started container are recreated.
		_ = os.RemoveAll(ioDir)
		cio, err := newContainerIO(ioDir, ctr.ID, cfg.GetTty(), cfg.GetStdin(), cfg.GetStdinOnce(), ctr.LogPath, s.cfg.MaxContainerLogLineSize)
		if err != nil {
			return err
		}
		ctr.io = cio
		s.containers.add(ctr.ID, ctr)
		return nil
	case stateExited:
		ctr.State = runtime.ContainerState_CONTAINER_EXITED
		ctr.io = attachIO(cio.NewFIFOSet(cio.Config{}, nil), cfg.GetStdinOnce(), "", 0)
		close(ctr.exited)
		s.containers.add(ctr.ID, ctr)
		return nil
	}
	// Running (or running when berth-cri died): reattach to the task's
	// FIFOs and continue the log, or collect the exit the shim kept.
	ctr.State = runtime.ContainerState_CONTAINER_RUNNING
	var rio *containerIO
	task, err := c.Task(ctx, func(f *cio.FIFOSet) (cio.IO, error) {
		rio = attachIO(f, cfg.GetStdinOnce(), ctr.LogPath, s.cfg.MaxContainerLogLineSize)
		return rio.open(ctx)
	})
	if err != nil {
		// The task is gone and its exit status with it (the shim died
		// too): report an unknown exit rather than inventing one.
		ctr.io = attachIO(cio.NewFIFOSet(cio.Config{}, nil), false, "", 0)
		s.containers.add(ctr.ID, ctr)
		s.handleExitUnknown(ctr)
		return nil
	}
	ctr.io = rio
	if ctr.io == nil {
		ctr.io = attachIO(cio.NewFIFOSet(cio.Config{}, nil), false, "", 0)
	}
	s.containers.add(ctr.ID, ctr)
	st, err := task.Status(ctx)
	if err != nil {
		return err
	}
	switch st.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		exitCh, err := task.Wait(s.waitCtx())
		if err != nil {
			return err
		}
		ctr.Pid = task.Pid()
		ctr.oomw = s.watchOOMCgroup(ctr.ID, ctr.Pid)
		if ctr.StartedAt == 0 {
			// The start record was never written (berth-cri died right
			// after StartContainer): the process's own start time is the
			// truth, and the record is written now.
			if t, err := procStartTime(ctr.Pid); err == nil {
				ctr.StartedAt = t.UnixNano()
				_, _ = c.SetLabels(ctx, map[string]string{labelState: stateRunning, labelStarted: itoa64(ctr.StartedAt)})
			}
		}
		ctr.io.setTaskCloser(s.stdinCloser(task))
		s.monitorContainer(ctr, task, exitCh)
	case containerd.Stopped:
		if sp, err := c.Spec(ctx); err == nil && sp.Linux != nil {
			ctr.oomw = recoveredOOMWatch(sp.Linux.CgroupsPath)
		}
		s.handleExit(ctr, task, st.ExitStatus, st.ExitTime)
	case containerd.Created:
		// Start never completed: the process never ran.
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		ctr.State = runtime.ContainerState_CONTAINER_CREATED
	default:
		s.handleExitUnknown(ctr)
	}
	return nil
}

// handleExitUnknown records an exit whose status was lost with the shim.
func (s *Service) handleExitUnknown(c *container) {
	ctx := s.nsCtx(context.Background())
	c.mu.Lock()
	c.State = runtime.ContainerState_CONTAINER_EXITED
	c.FinishedAt = time.Now().UnixNano()
	c.ExitCode = 255
	c.Reason = "Unknown"
	c.Message = "the container's exit status was lost: its shim exited while berth-cri was not running"
	labels := map[string]string{labelState: stateExited, labelFinished: itoa64(c.FinishedAt),
		labelExitCode: "255", labelReason: c.Reason, labelMessage: c.Message}
	c.mu.Unlock()
	_, _ = c.cntr.SetLabels(ctx, labels)
	select {
	case <-c.exited:
	default:
		close(c.exited)
	}
}

// sweepOrphanNetNS removes pinned namespaces in berth-cri's own netns dir
// that no sandbox owns (left by a crash between creating the netns and
// recording it).
func (s *Service) sweepOrphanNetNS() {
	dir := filepath.Join(s.cfg.StateDir, "netns")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	owned := map[string]bool{}
	for _, sb := range s.sandboxes.list() {
		owned[sb.snapshot().NetNSPath] = true
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !owned[p] {
			_ = unmountAll(p)
			_ = os.Remove(p)
			s.log.Info("removed orphan network namespace", "path", p)
		}
	}
}

// procStartTime is when a process started: field 22 of /proc/<pid>/stat
// (clock ticks after boot, USER_HZ = 100 on Linux) plus the boot time.
func procStartTime(pid uint32) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	// The command name may hold spaces; fields start after its ")".
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return time.Time{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(boot, 0).Add(time.Duration(ticks) * 10 * time.Millisecond), nil
		}
	}
	return time.Time{}, fmt.Errorf("no btime in /proc/stat")
}
