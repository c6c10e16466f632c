// Package spec turns CRI configs into OCI runtime spec options for
// containerd: the pause (sandbox) container and application containers.
// It follows containerd's CRI plugin (v2.2) closely, because critest and
// kubelet expect that behaviour, but is written for berth-cri.
//
// API:
//
//	type Runtime struct {
//		CgroupDriver   string // "cgroupfs" | "systemd"
//		RROSupported   bool   // runc lists "rro" and kernel >= 5.12
//		SeccompEnabled bool
//		LookupMount    func(path string) (mount.Info, error) // nil: /proc/self/mountinfo
//	}
//	type Sandbox struct {
//		ID        string
//		Config    *runtime.PodSandboxConfig
//		Pid       uint32 // pause pid; 0 while building the pause spec
//		NetNSPath string // "" for host network
//		HostnamePath, HostsPath, ResolvPath, ShmPath string // "" if absent
//		ImageName string // pause image, for an annotation; optional
//	}
//	func SandboxOpts(sb Sandbox, img imagespec.ImageConfig, rt Runtime) ([]oci.SpecOpts, error)
//	func ContainerOpts(id string, c *runtime.ContainerConfig, sb Sandbox, img imagespec.ImageConfig,
//		imageRef string, rt Runtime, targetPid func(containerID string) (uint32, error)) ([]oci.SpecOpts, error)
//	func WithResources(r *runtime.LinuxContainerResources) oci.SpecOpts // UpdateContainerResources
//	func CgroupsPath(parent, id, driver string) string
//	func UserFromSpec(s *specs.Spec) *runtime.ContainerUser
//	func ValidateSandboxConfig(c *runtime.PodSandboxConfig) error
//	func ValidateContainerConfig(c *runtime.ContainerConfig, sandbox *runtime.PodSandboxConfig) error
//	func WithRootfsDir(ctx context.Context, dir string) context.Context // tests: users from a directory
//
// Use the options with containerd.WithNewSpec, placed after
// containerd.WithNewSnapshot: the user and group options read /etc/passwd
// and /etc/group from the container's snapshot. Errors are gRPC status
// errors (mostly InvalidArgument, naming the field); errors raised while
// the options are applied (a missing device, an unreadable seccomp profile
// or passwd entry) reach the caller through containerd and should be
// wrapped with %w so the code survives.
//
// What the server must do around it:
//   - prepare the sandbox files (hostname, hosts, resolv.conf from the DNS
//     config, a 64 MiB tmpfs for /dev/shm) and pass their paths in Sandbox;
//   - create and pin the network namespace and pass NetNSPath;
//   - pass the pause task's pid in Sandbox.Pid for ContainerOpts;
//   - probe runc's features for Runtime.RROSupported and
//     pkg/seccomp.IsEnabled for Runtime.SeccompEnabled;
//   - on a host whose / is a private mount, BIDIRECTIONAL and
//     HOST_TO_CONTAINER mounts fail until `mount --make-rshared /`.
//
// Not implemented, on purpose or for now:
//   - image VOLUMEs are not turned into anonymous volumes (containerd
//     creates a directory per volume under the container's root); kubelet
//     mounts every volume explicitly and critest does not test it;
//   - image volume mounts (Mount.image), idmapped mounts and pod user
//     namespaces return Unimplemented;
//   - AppArmor: any profile other than unconfined is rejected, since the
//     hosts have no AppArmor LSM and an unenforced profile would lie;
//   - SELinux options are ignored (no SELinux on the hosts);
//   - ambient capabilities return Unimplemented;
//   - CDI devices return Unimplemented; blockio and RDT classes are
//     ignored;
//   - sysctls are set on the pause container only: they belong to the
//     network and IPC namespaces the containers share with it.
package spec
