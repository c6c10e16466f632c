package spec

import (
	"context"
	"maps"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox is what the spec of the pause container and of the pod's
// containers needs to know about the pod.
type Sandbox struct {
	ID     string
	Config *runtime.PodSandboxConfig
	// Pid is the pause task's pid; containers join /proc/<Pid>/ns/{net,
	// ipc,uts,pid}. 0 while building the pause spec itself.
	Pid uint32
	// NetNSPath is the pinned network namespace ("" for host network).
	NetNSPath string
	// Files and directories the server prepared under the sandbox
	// directories; "" when absent. A path that does not exist is skipped
	// as well:
	// HostnamePath (/etc/hostname), HostsPath (/etc/hosts), ResolvPath
	// (/etc/resolv.conf), ShmPath (a tmpfs for /dev/shm, unused in host
	// IPC pods, which get the host's /dev/shm).
	HostnamePath, HostsPath, ResolvPath, ShmPath string
	// ImageName is the pause image reference, recorded in the
	// io.kubernetes.cri.podsandbox.image-name annotation. Optional.
	ImageName string
}

// Default sysctls of a pod with its own network namespace, as in
// containerd 2 (enable_unprivileged_ports / enable_unprivileged_icmp):
// non-root processes may bind low ports and send ICMP echo, which is safe
// because the namespace is the pod's alone.
const (
	sysctlUnprivilegedPortStart = "net.ipv4.ip_unprivileged_port_start"
	sysctlPingGroupRange        = "net.ipv4.ping_group_range"
)

// SandboxOpts builds the spec options of the pause container.
//
// The pause process only holds the pod's namespaces: a read-only rootfs,
// the image's entrypoint and cmd, the pinned network namespace (none of its
// own for a host-network pod, and then no UTS namespace either), no PID or
// IPC namespace of its own for host PID / host IPC, the sandbox /dev/shm and
// resolv.conf bound read-only, the pod's sysctls (which apply to the shared
// network and IPC namespaces, so containers need not repeat them), the pod's
// seccomp profile and user, CPU shares 2 and oom_score_adj -998, and the CRI
// annotations the runc shim groups containers by.
//
// The options must be applied with containerd.WithNewSpec after
// WithNewSnapshot: a non-numeric image USER is resolved in the snapshot.
func SandboxOpts(sb Sandbox, img imagespec.ImageConfig, rt Runtime) ([]oci.SpecOpts, error) {
	cfg := sb.Config
	if cfg == nil {
		return nil, invalidf("config is required")
	}
	sc := cfg.GetLinux().GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	hostNet := ns.GetNetwork() == runtime.NamespaceMode_NODE

	args := append(append([]string(nil), img.Entrypoint...), img.Cmd...)
	if len(args) == 0 {
		return nil, invalidf("sandbox image has neither entrypoint nor cmd")
	}
	// Checked first so that an unsupported request fails before anything
	// else is looked at.
	if err := checkAppArmor("config.linux.security_context.apparmor", sc.GetApparmor(), ""); err != nil {
		return nil, err
	}

	opts := []oci.SpecOpts{
		oci.WithoutRunMount,
		withoutDefaultSecurity,
		withRelativeRoot,
		oci.WithEnv(img.Env),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs(args...),
	}
	// runc refuses a hostname without a UTS namespace of its own, and a
	// host-network pod shares the host's.
	if !hostNet {
		opts = append(opts, oci.WithHostname(cfg.GetHostname()))
	}
	if img.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(img.WorkingDir))
	}
	opts = append(opts, withCgroupsPath(cfg.GetLinux().GetCgroupParent(), sb.ID, rt.CgroupDriver)...)

	nsOpts, err := sandboxNamespaceOpts(sb)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nsOpts...)

	// /dev/shm: the host's for host IPC, else the per-pod tmpfs when the
	// server made one; without either the default tmpfs stays.
	shm := sb.ShmPath
	if ns.GetIpc() == runtime.NamespaceMode_NODE {
		shm = devShm
	}
	var binds []specs.Mount
	if shm != "" {
		opts = append(opts, oci.WithoutMounts(devShm))
		binds = append(binds, sandboxBind(shm, devShm))
	}
	if sb.ResolvPath != "" {
		binds = append(binds, sandboxBind(sb.ResolvPath, resolvConf))
	}
	if len(binds) > 0 {
		opts = append(opts, oci.WithMounts(binds))
	}

	// In a pod user namespace the wide ping_group_range names unmapped
	// groups and the kernel refuses it, as it does for a rootless runtime.
	// (NamespaceMode's zero value is POD, so the option must be present.)
	u := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	podUserns := u != nil && u.GetMode() == runtime.NamespaceMode_POD
	opts = append(opts, withSysctls(sandboxSysctls(cfg, hostNet, probeHost().inUserNS || podUserns)))

	user, err := userString("config.linux.security_context", "", sc.GetRunAsUser(), sc.GetRunAsGroup())
	if err != nil {
		return nil, err
	}
	if user == "" {
		user = img.User
	}
	if user != "" {
		opts = append(opts, withUser(user))
	}
	// After the user: setting the user resets the additional groups.
	opts = append(opts, withSupplementalGroups(sc.GetSupplementalGroups()))

	opts = append(opts, withCPUShares(sandboxCPUShares))
	if r := cfg.GetLinux().GetResources(); r != nil {
		opts = append(opts, sandboxResourceAnnotations(r))
	}
	opts = append(opts, withOOMScoreAdj(sandboxOOMScoreAdj))

	imageName := sb.ImageName
	opts = append(opts, oci.WithAnnotations(map[string]string{
		AnnotationContainerType:    ContainerTypeSandbox,
		AnnotationSandboxID:        sb.ID,
		AnnotationSandboxName:      cfg.GetMetadata().GetName(),
		AnnotationSandboxNamespace: cfg.GetMetadata().GetNamespace(),
		AnnotationSandboxUID:       cfg.GetMetadata().GetUid(),
		AnnotationSandboxLogDir:    cfg.GetLogDirectory(),
		AnnotationSandboxImageName: imageName,
	}))

	// Seccomp last: the default profile depends on the capabilities.
	sec, err := seccompOpts("config.linux.security_context.seccomp", sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetPrivileged(), rt)
	if err != nil {
		return nil, err
	}
	return append(opts, sec...), nil
}

// sandboxSysctls returns the pod's sysctls plus the unprivileged port and
// ICMP defaults for a pod with its own network namespace. ping_group_range
// cannot be widened from inside a user namespace (berth-cri running
// rootless), so it is left out there.
func sandboxSysctls(cfg *runtime.PodSandboxConfig, hostNet, inUserNS bool) map[string]string {
	out := maps.Clone(cfg.GetLinux().GetSysctls())
	if out == nil {
		out = map[string]string{}
	}
	if hostNet {
		return out
	}
	if _, ok := out[sysctlUnprivilegedPortStart]; !ok {
		out[sysctlUnprivilegedPortStart] = "0"
	}
	if _, ok := out[sysctlPingGroupRange]; !ok && !inUserNS {
		out[sysctlPingGroupRange] = "0 2147483647"
	}
	return out
}

// withSysctls merges sysctls into linux.sysctl.
func withSysctls(sysctls map[string]string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if len(sysctls) == 0 {
			return nil
		}
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = make(map[string]string, len(sysctls))
		}
		maps.Copy(s.Linux.Sysctl, sysctls)
		return nil
	}
}
