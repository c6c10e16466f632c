package spec

import (
	"os"

	"github.com/containerd/containerd/v2/pkg/oci"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// errPrivilegedSandbox is containerd's message; critest and users know it.
const errPrivilegedSandbox = "no privileged container allowed in sandbox"

// hostname is os.Hostname, replaceable in tests.
var hostname = os.Hostname

// processArgs applies Docker's rules: a CRI command replaces the image's
// entrypoint and drops its cmd; CRI args replace the image's cmd. An image
// ENTRYPOINT [""] means "no entrypoint".
func processArgs(c *runtime.ContainerConfig, img imagespec.ImageConfig) ([]string, error) {
	command := append([]string(nil), c.GetCommand()...)
	args := append([]string(nil), c.GetArgs()...)
	if len(command) == 0 {
		if len(args) == 0 {
			args = append(args, img.Cmd...)
		}
		if !(len(img.Entrypoint) == 1 && img.Entrypoint[0] == "") {
			command = append(command, img.Entrypoint...)
		}
	}
	if len(command) == 0 && len(args) == 0 {
		return nil, invalidf("config.command: no command specified and the image has neither entrypoint nor cmd")
	}
	return append(command, args...), nil
}

// ContainerOpts builds the spec options of an application container, in
// containerd's order:
//
//  1. no /run tmpfs, no default seccomp/AppArmor/rlimits, relative rootfs,
//     args, PATH, new privileges allowed (no_new_privs decides below), cwd,
//     TTY, env (HOSTNAME, then the image's, then the CRI's);
//  2. a cgroup namespace on cgroup v2 unless privileged;
//  3. bind mounts (see prepareContainerMounts) and the cgroupfs mount;
//  4. masked and read-only paths;
//  5. devices, capabilities, privileged, no ambient capabilities,
//     no_new_privs, read-only rootfs;
//  6. resources, cgroups path, oom_score_adj, namespaces, annotations;
//  7. user and supplemental groups;
//  8. seccomp (last: the default profile depends on the capabilities).
//
// imageRef is the image name recorded in io.kubernetes.cri.image-name (the
// name the user asked for). targetPid resolves the pid of the container
// named by a TARGET PID namespace; it may be nil when no container uses
// TARGET. Mount preparation (creating missing host paths, resolving
// symlinks, checking propagation) happens here, so those errors come back
// with gRPC codes; reading /etc/passwd, /etc/group, devices and seccomp
// profile files happens when the options are applied (containerd.WithNewSpec
// after WithNewSnapshot).
func ContainerOpts(id string, c *runtime.ContainerConfig, sb Sandbox, img imagespec.ImageConfig, imageRef string, rt Runtime, targetPid func(containerID string) (uint32, error)) ([]oci.SpecOpts, error) {
	if c == nil {
		return nil, invalidf("config is required")
	}
	if sb.Config == nil {
		return nil, invalidf("sandbox_config is required")
	}
	sc := c.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()
	if privileged && !sb.Config.GetLinux().GetSecurityContext().GetPrivileged() {
		return nil, invalidf(errPrivilegedSandbox)
	}
	// Requests berth-cri cannot honour fail before anything is created.
	if len(c.GetCDIDevices()) > 0 {
		return nil, unimplementedf("config.CDI_devices: CDI devices are not supported")
	}
	if err := checkAppArmor("config.linux.security_context.apparmor", sc.GetApparmor(), sc.GetApparmorProfile()); err != nil {
		return nil, err
	}
	seccomp, err := seccompOpts("config.linux.security_context.seccomp", sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, rt)
	if err != nil {
		return nil, err
	}
	userOpts, err := containerUserOpts(sc, img.User)
	if err != nil {
		return nil, err
	}
	capOpts, err := capabilityOpts(sc.GetCapabilities())
	if err != nil {
		return nil, err
	}
	nsOpts, err := containerNamespaceOpts(c, sb, targetPid)
	if err != nil {
		return nil, err
	}

	// 1. Process.
	args, err := processArgs(c, img)
	if err != nil {
		return nil, err
	}
	opts := []oci.SpecOpts{
		oci.WithoutRunMount,
		withoutDefaultSecurity,
		withRelativeRoot,
		oci.WithProcessArgs(args...),
		oci.WithDefaultPathEnv,
		oci.WithNewPrivileges,
	}
	if wd := c.GetWorkingDir(); wd != "" {
		opts = append(opts, oci.WithProcessCwd(wd))
	} else if img.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(img.WorkingDir))
	}
	if c.GetTty() {
		opts = append(opts, oci.WithTTY)
	}
	host := sb.Config.GetHostname()
	if host == "" {
		if host, err = hostname(); err != nil {
			return nil, err
		}
	}
	opts = append(opts, oci.WithEnv([]string{"HOSTNAME=" + host}))
	// Two steps, so that a CRI variable replaces the image's entry of the
	// same name instead of following it.
	opts = append(opts, oci.WithEnv(img.Env))
	env := make([]string, 0, len(c.GetEnvs()))
	for _, kv := range c.GetEnvs() {
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	opts = append(opts, oci.WithEnv(env))

	// 2. A cgroup namespace hides the host's cgroup tree; on cgroup v1
	// (and for privileged containers) containers see the host's, as with
	// Docker.
	if probeHost().unifiedCgroups && !privileged {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}))
	}

	// 3. Mounts.
	binds, err := prepareContainerMounts(c, sb, rt)
	if err != nil {
		return nil, err
	}
	opts = append(opts, withContainerMounts(binds, rt))

	// 4. Masked and read-only paths.
	opts = append(opts, maskedPathOpts(sc)...)

	// 5. Devices and privileges.
	opts = append(opts, withDevices(c.GetDevices()))
	opts = append(opts, capOpts...)
	if privileged {
		opts = append(opts, privilegedOpts()...)
	}
	opts = append(opts, withoutAmbientCaps)
	if sc.GetNoNewPrivs() {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if sc.GetReadonlyRootfs() {
		opts = append(opts, oci.WithRootFSReadonly())
	}

	// 6. Resources, cgroup, namespaces, annotations.
	if r := c.GetLinux().GetResources(); r != nil {
		opts = append(opts, withResources(r), withOOMScoreAdj(int(r.GetOomScoreAdj())))
	}
	opts = append(opts, withCgroupsPath(sb.Config.GetLinux().GetCgroupParent(), id, rt.CgroupDriver)...)
	opts = append(opts, nsOpts...)
	if a := c.GetAnnotations(); len(a) > 0 {
		opts = append(opts, oci.WithAnnotations(a))
	}
	// The CRI annotations go last so a config annotation cannot fake them.
	md := sb.Config.GetMetadata()
	opts = append(opts, oci.WithAnnotations(map[string]string{
		AnnotationContainerType:    ContainerTypeContainer,
		AnnotationSandboxID:        sb.ID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationContainerName:    c.GetMetadata().GetName(),
		AnnotationImageName:        imageRef,
	}))

	// 7. User and groups.
	opts = append(opts, userOpts...)

	// 8. Seccomp.
	return append(opts, seccomp...), nil
}

// WithResources applies CRI resources to a spec; UpdateContainerResources
// uses it on a copy of the container's spec and hands the result's
// linux.resources to task.Update. oom_score_adj is not included: it cannot
// change for a running process.
func WithResources(r *runtime.LinuxContainerResources) oci.SpecOpts {
	return withResources(r)
}
