package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/netns"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/cri/spec"
)

// undo is a rollback stack: every step that succeeds pushes its inverse,
// and a failure runs them newest first, so a failed RunPodSandbox leaves no
// netns, IP, mount, snapshot or container behind.
type undo struct{ fns []func(context.Context) error }

func (u *undo) push(f func(context.Context) error) { u.fns = append(u.fns, f) }

func (u *undo) run(ctx context.Context, log func(string, ...any)) {
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](ctx); err != nil {
			log("rollback step failed", "err", err)
		}
	}
}

func sandboxKey(md *runtime.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", md.GetName(), md.GetNamespace(), md.GetUid(), md.GetAttempt())
}

// RunPodSandbox creates the pause container that owns the pod's
// namespaces and wires its network through CNI.
func (s *Service) RunPodSandbox(ctx context.Context, r *runtime.RunPodSandboxRequest) (*runtime.RunPodSandboxResponse, error) {
	if err := spec.ValidateSandboxConfig(r.GetConfig()); err != nil {
		return nil, err
	}
	switch r.GetRuntimeHandler() {
	case "", "runc":
	default:
		return nil, invalid("runtime_handler %q is not configured (berth-cri serves \"\" and \"runc\")", r.GetRuntimeHandler())
	}
	key := sandboxKey(r.GetConfig().GetMetadata())
	id, err := s.inflight.do(ctx, "sandbox/"+key, func(ctx context.Context) (string, error) {
		// A retry that arrives after the first call finished: the pod is
		// already there, so hand back its ID instead of "name is reserved".
		if sb := s.findSandboxByKey(key); sb != nil {
			if sb.snapshot().State == runtime.PodSandboxState_SANDBOX_READY {
				return sb.ID, nil
			}
			// A not-ready leftover with the same name and attempt: replace it.
			if err := s.removeSandbox(ctx, sb); err != nil {
				return "", err
			}
		}
		ctx, cancel := context.WithTimeout(s.nsCtx(ctx), 4*time.Minute)
		defer cancel()
		return s.runSandbox(ctx, r.GetConfig(), r.GetRuntimeHandler())
	})
	if err != nil {
		return nil, err
	}
	return &runtime.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (s *Service) findSandboxByKey(key string) *sandbox {
	for _, sb := range s.sandboxes.list() {
		if sandboxKey(sb.Config.GetMetadata()) == key {
			return sb
		}
	}
	return nil
}

func (s *Service) runSandbox(ctx context.Context, cfg *runtime.PodSandboxConfig, handler string) (_ string, retErr error) {
	id := newID()
	log := s.log.With("sandbox", id, "pod", cfg.GetMetadata().GetNamespace()+"/"+cfg.GetMetadata().GetName())
	var u undo
	// keep is set when the rollback's CNI DEL fails: the sandbox record,
	// its netns and its container then stay, marked as owing a DEL, so the
	// retry loop (and kubelet's Stop/Remove of the NOTREADY sandbox) can
	// release the address later. Dropping them would leak the IP.
	keep := false
	unlessKept := func(f func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			if keep {
				return nil
			}
			return f(ctx)
		}
	}
	defer func() {
		if retErr != nil {
			u.run(context.WithoutCancel(ctx), log.Warn)
		}
	}()

	img, err := s.images.EnsurePulled(ctx, s.cfg.PauseImage)
	if err != nil {
		return "", errorf(err, "sandbox image %q", s.cfg.PauseImage)
	}

	sb := &sandbox{ID: id, Config: cfg, CreatedAt: nowNano(), Handler: handler,
		State: runtime.PodSandboxState_SANDBOX_NOTREADY, exited: make(chan struct{})}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()

	rootDir, stateDir := s.sandboxRootDir(id), s.sandboxStateDir(id)
	for _, d := range []string{rootDir, stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", errorf(err, "create sandbox dir")
		}
		d := d
		u.push(unlessKept(func(context.Context) error { return os.RemoveAll(d) }))
	}

	uids, gids, err := spec.UsernsMappings("config.linux.security_context.namespace_options.userns_options", ns.GetUsernsOptions())
	if err != nil {
		return "", err
	}
	podUserns := uids != nil
	if podUserns && !s.usernsSupported {
		return "", invalid("config.linux.security_context.namespace_options.userns_options: user namespaces need runc with idmapped mount support, which this node lacks")
	}
	// With a pod user namespace the network namespace must belong to it
	// (so the pod's root may configure it), so runc creates it with the
	// pause and it is pinned from the pause PID before CNI ADD.
	if ns.GetNetwork() != runtime.NamespaceMode_NODE && !podUserns {
		n, err := netns.NewNetNS(filepath.Join(s.cfg.StateDir, "netns"))
		if err != nil {
			return "", errorf(err, "create network namespace")
		}
		sb.NetNSPath = n.GetPath()
		u.push(unlessKept(func(context.Context) error { return n.Remove() }))
	}

	files, err := s.setupSandboxFiles(sb, rootDir, stateDir)
	if err != nil {
		return "", errorf(err, "sandbox files")
	}
	if files.ShmPath != "" && ns.GetIpc() != runtime.NamespaceMode_NODE {
		u.push(unlessKept(func(context.Context) error { return unmountAll(files.ShmPath) }))
	}

	in := spec.Sandbox{ID: id, Config: cfg, NetNSPath: sb.NetNSPath,
		HostnamePath: files.HostnamePath, HostsPath: files.HostsPath,
		ResolvPath: files.ResolvPath, ShmPath: files.ShmPath}
	specOpts, err := spec.SandboxOpts(in, img.Config, s.rt)
	if err != nil {
		return "", err
	}
	specOpts = append(specOpts, withOOMScoreFloor(s.oomFloor))
	labels := map[string]string{}
	for k, v := range cfg.GetLabels() {
		labels[k] = v
	}
	labels[labelKind] = kindSandbox
	labels[labelState] = stateCreating
	m := &meta{Kind: kindSandbox, ID: id, Config: marshalConfig(cfg), CreatedAt: sb.CreatedAt,
		NetNSPath: sb.NetNSPath, RuntimeHandler: handler}
	cntr, err := s.client.NewContainer(ctx, id,
		containerd.WithSnapshotter(s.cfg.Snapshotter),
		containerd.WithNewSnapshot(id, img.CDImage, remapOpts(uids, gids)...),
		containerd.WithNewSpec(specOpts...),
		containerd.WithRuntime("io.containerd.runc.v2", s.runcOptions()),
		containerd.WithContainerLabels(labels),
		containerd.WithContainerExtension(extMeta, m),
	)
	if err != nil {
		return "", errorf(err, "create sandbox container")
	}
	sb.cntr = cntr
	u.push(unlessKept(func(ctx context.Context) error {
		return cntr.Delete(ctx, containerd.WithSnapshotCleanup)
	}))
	// The sandbox is in the store from here on, so a concurrent list shows
	// it as NOTREADY and Stop/Remove find it.
	s.sandboxes.add(id, sb)
	u.push(unlessKept(func(context.Context) error { s.sandboxes.delete(id); return nil }))

	// CNI ADD and creating the pause task are independent (the task only
	// needs the netns path), so they run side by side.
	var (
		wg      sync.WaitGroup
		ips     []string
		cniErr  error
		task    containerd.Task
		taskErr error
	)
	if sb.NetNSPath != "" {
		rc := s.cni.runtimeConf(sb, s.cfg.TenantKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips, cniErr = s.cni.setup(ctx, sb, rc)
		}()
	}
	task, taskErr = cntr.NewTask(ctx, cio.NullIO)
	wg.Wait()
	if podUserns && taskErr == nil && ns.GetNetwork() != runtime.NamespaceMode_NODE {
		// Pin the netns runc created in the pod's user namespace, then
		// wire it; the pause has not started yet.
		n, err := netns.NewNetNSFromPID(filepath.Join(s.cfg.StateDir, "netns"), task.Pid())
		if err != nil {
			taskErr = fmt.Errorf("pin the pod network namespace: %w", err)
		} else {
			u.push(unlessKept(func(context.Context) error { return n.Remove() }))
			sb.mu.Lock()
			sb.NetNSPath = n.GetPath()
			sb.mu.Unlock()
			ips, cniErr = s.cni.setup(ctx, sb, s.cni.runtimeConf(sb, s.cfg.TenantKey))
		}
	}
	if task != nil {
		u.push(func(ctx context.Context) error {
			_, err := task.Delete(ctx, containerd.WithProcessKill)
			return ignoreNotFound(err)
		})
	}
	if sb.NetNSPath != "" {
		// Undo CNI whether or not ADD reported success: a plugin that
		// failed halfway may still hold an address.
		u.push(func(ctx context.Context) error {
			err := s.cni.teardown(ctx, sb, s.cni.runtimeConf(sb, s.cfg.TenantKey))
			if err != nil {
				keep = true
				sb.mu.Lock()
				sb.CNIPending = true
				sb.mu.Unlock()
				close(sb.exited)
				if _, lerr := cntr.SetLabels(ctx, map[string]string{labelCNI: "pending", labelState: stateNotReady}); lerr != nil {
					log.Warn("record pending CNI teardown", "err", lerr)
				}
			}
			return err
		})
	}
	if cniErr != nil {
		return "", errorf(cniErr, "set up pod network (CNI ADD)")
	}
	if taskErr != nil {
		return "", errorf(taskErr, "create sandbox task")
	}
	exitCh, err := task.Wait(s.waitCtx())
	if err != nil {
		return "", errorf(err, "wait sandbox task")
	}
	if err := task.Start(ctx); err != nil {
		return "", errorf(err, "start sandbox task")
	}
	newLabels := map[string]string{labelState: stateReady}
	if podUserns {
		newLabels[labelNetNS] = sb.NetNSPath
	}
	if len(ips) > 0 {
		newLabels[labelIP] = ips[0]
		if len(ips) > 1 {
			newLabels[labelIPs] = strings.Join(ips[1:], ",")
		}
	}
	if _, err := cntr.SetLabels(ctx, newLabels); err != nil {
		return "", errorf(err, "record sandbox state")
	}
	sb.mu.Lock()
	sb.Pid = task.Pid()
	sb.State = runtime.PodSandboxState_SANDBOX_READY
	if len(ips) > 0 {
		sb.IP, sb.ExtraIPs = ips[0], ips[1:]
	}
	sb.mu.Unlock()
	s.monitorSandbox(sb, task, exitCh)
	s.events.sandbox(sb, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	s.events.sandbox(sb, runtime.ContainerEventType_CONTAINER_STARTED_EVENT)
	log.Info("sandbox ready", "ip", sb.IP, "netns", sb.NetNSPath)
	return id, nil
}

func (s *Service) runcOptions() *options.Options {
	return &options.Options{BinaryName: s.cfg.RuncPath, SystemdCgroup: s.cfg.CgroupDriver == "systemd"}
}

// monitorSandbox marks the sandbox not ready when its pause process exits.
func (s *Service) monitorSandbox(sb *sandbox, task containerd.Task, exitCh <-chan containerd.ExitStatus) {
	go func() {
		select {
		case <-exitCh:
		case <-s.stopCh:
			return
		}
		ctx := s.nsCtx(context.Background())
		sb.mu.Lock()
		sb.State = runtime.PodSandboxState_SANDBOX_NOTREADY
		sb.mu.Unlock()
		if _, err := sb.cntr.SetLabels(ctx, map[string]string{labelState: stateNotReady}); err != nil {
			s.log.Warn("record sandbox exit", "sandbox", sb.ID, "err", err)
		}
		if _, err := task.Delete(ctx); err != nil && !isNotFound(err) {
			s.log.Warn("delete sandbox task", "sandbox", sb.ID, "err", err)
		}
		select {
		case <-sb.exited:
		default:
			close(sb.exited)
		}
		s.events.sandbox(sb, runtime.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}()
}

// sandboxFiles are the per-pod files bind-mounted into every container.
type sandboxFiles struct {
	HostnamePath, HostsPath, ResolvPath, ShmPath string
}

func (s *Service) setupSandboxFiles(sb *sandbox, rootDir, stateDir string) (sandboxFiles, error) {
	cfg := sb.Config
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	f := sandboxFiles{
		HostnamePath: filepath.Join(rootDir, "hostname"),
		HostsPath:    filepath.Join(rootDir, "hosts"),
		ResolvPath:   filepath.Join(rootDir, "resolv.conf"),
	}
	hostname := cfg.GetHostname()
	if hostname == "" || ns.GetNetwork() == runtime.NamespaceMode_NODE {
		if h, err := os.Hostname(); err == nil && cfg.GetHostname() == "" {
			hostname = h
		}
	}
	if err := os.WriteFile(f.HostnamePath, []byte(hostname+"\n"), 0o644); err != nil {
		return f, err
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	if err := os.WriteFile(f.HostsPath, hosts, 0o644); err != nil {
		return f, err
	}
	var resolv []byte
	if dns := cfg.GetDnsConfig(); dns != nil {
		resolv = []byte(resolvConf(dns))
	} else if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		resolv = b
	}
	if err := os.WriteFile(f.ResolvPath, resolv, 0o644); err != nil {
		return f, err
	}
	if ns.GetIpc() == runtime.NamespaceMode_NODE {
		f.ShmPath = "/dev/shm"
		return f, nil
	}
	// A private /dev/shm per pod, shared by its containers: the size
	// containerd and Docker use, world-writable with the sticky bit.
	f.ShmPath = filepath.Join(stateDir, "shm")
	if err := os.MkdirAll(f.ShmPath, 0o700); err != nil {
		return f, err
	}
	if err := unix.Mount("shm", f.ShmPath, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size=65536k"); err != nil {
		return f, fmt.Errorf("mount shm: %w", err)
	}
	return f, nil
}

// resolvConf renders DNSConfig as resolv.conf.
func resolvConf(dns *runtime.DNSConfig) string {
	var b strings.Builder
	if len(dns.GetSearches()) > 0 {
		b.WriteString("search " + strings.Join(dns.GetSearches(), " ") + "\n")
	}
	for _, s := range dns.GetServers() {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(dns.GetOptions()) > 0 {
		b.WriteString("options " + strings.Join(dns.GetOptions(), " ") + "\n")
	}
	return b.String()
}

// unmountAll detaches every mount stacked on path; a path that is not a
// mount point is fine.
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
	}
	return nil
}

// remapOpts makes the snapshot's files owned by the pod's user namespace
// (idmapped layers on overlayfs), so the pod's root owns its rootfs.
func remapOpts(uids, gids []specs.LinuxIDMapping) []snapshots.Opt {
	if len(uids) == 0 || len(gids) == 0 {
		return nil
	}
	return []snapshots.Opt{containerd.WithRemapperLabels(0, uids[0].HostID, 0, gids[0].HostID, uids[0].Size)}
}
