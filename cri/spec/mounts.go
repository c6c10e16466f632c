package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// bindRequest is one bind mount before its host side has been checked.
type bindRequest struct {
	field       string // "config.mounts[2]" for error messages, or the sandbox file
	src, dst    string
	readonly    bool
	rro         bool
	propagation runtime.MountPropagation
	create      bool // create src as a directory when missing (CRI mounts only)
}

// bindMounts is the result of preparing the container's bind mounts.
type bindMounts struct {
	mounts            []specs.Mount
	rootfsPropagation string
}

func (rt Runtime) lookupMount(p string) (mount.Info, error) {
	if rt.LookupMount != nil {
		return rt.LookupMount(p)
	}
	return mount.Lookup(p)
}

// prepareContainerMounts turns the CRI mounts plus the sandbox's files into
// OCI bind mounts, in containerd's order and with its checks:
//
//   - CRI mounts come first; the sandbox's /etc/hostname, /etc/hosts,
//     /etc/resolv.conf (read-only when the rootfs is) and /dev/shm are
//     added only where the CRI mounts do not already cover that path.
//   - A missing CRI host path is created as a directory (kubelet relies on
//     it for hostPath DirectoryOrCreate-like behaviour of older clients);
//     symlinks in the host path are resolved, so the bind follows them on
//     the host rather than inside the container.
//   - Propagation PRIVATE is rprivate; HOST_TO_CONTAINER is rslave and
//     needs the source to sit on a shared or slave mount; BIDIRECTIONAL is
//     rshared, needs a shared source and makes the rootfs rshared too
//     (otherwise mounts made in the container could not reach the host).
//   - readonly is "ro"; recursive_read_only is "rro" (mount_setattr with
//     AT_RECURSIVE), which needs runtime support, readonly and PRIVATE.
//   - The result is sorted by destination depth so that /a is mounted
//     before /a/b and does not hide it.
//
// Image VOLUMEs are not turned into anonymous volumes (containerd does);
// kubelet never relies on them and critest does not test them.
// It has side effects (mkdir) and reads /proc/self/mountinfo, so it runs
// when ContainerOpts is called, and errors carry gRPC codes.
func prepareContainerMounts(c *runtime.ContainerConfig, sb Sandbox, rt Runtime) (bindMounts, error) {
	var reqs []bindRequest
	covered := map[string]bool{}
	for i, m := range c.GetMounts() {
		field := "config.mounts[" + strconv.Itoa(i) + "]"
		if m.GetImage().GetImage() != "" {
			return bindMounts{}, unimplementedf("%s.image: image volumes are not supported", field)
		}
		if len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0 {
			return bindMounts{}, unimplementedf("%s: idmapped mounts are not supported", field)
		}
		if m.GetRecursiveReadOnly() {
			if !m.GetReadonly() {
				return bindMounts{}, invalidf("%s.recursive_read_only requires readonly (host_path %q)", field, m.GetHostPath())
			}
			if m.GetPropagation() != runtime.MountPropagation_PROPAGATION_PRIVATE {
				return bindMounts{}, invalidf("%s.recursive_read_only requires propagation PROPAGATION_PRIVATE, got %s (host_path %q)",
					field, m.GetPropagation(), m.GetHostPath())
			}
			if !rt.RROSupported {
				return bindMounts{}, invalidf("%v: %s.recursive_read_only: the runtime does not support recursive read-only mounts (host_path %q)",
					crierrors.ErrRROUnsupported, field, m.GetHostPath())
			}
		}
		reqs = append(reqs, bindRequest{
			field:       field,
			src:         m.GetHostPath(),
			dst:         m.GetContainerPath(),
			readonly:    m.GetReadonly(),
			rro:         m.GetRecursiveReadOnly(),
			propagation: m.GetPropagation(),
			create:      true,
		})
		covered[filepath.Clean(m.GetContainerPath())] = true
	}

	roRootfs := c.GetLinux().GetSecurityContext().GetReadonlyRootfs()
	shm := sb.ShmPath
	if sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtime.NamespaceMode_NODE {
		// A host-IPC pod shares the host's SysV and POSIX shared memory.
		shm = devShm
	}
	for _, f := range []struct {
		dst, src string
		ro       bool
	}{
		{etcHostname, sb.HostnamePath, roRootfs},
		{etcHosts, sb.HostsPath, roRootfs},
		{resolvConf, sb.ResolvPath, roRootfs},
		{devShm, shm, false},
	} {
		if f.src == "" || covered[f.dst] {
			continue
		}
		// Like containerd, a sandbox file that is not there (a sandbox
		// from an older version, or a failed setup step) is skipped: the
		// image's own file is better than a container that cannot start.
		if _, err := os.Stat(f.src); err != nil {
			continue
		}
		reqs = append(reqs, bindRequest{field: "sandbox " + f.dst, src: f.src, dst: f.dst, readonly: f.ro})
	}

	sort.SliceStable(reqs, func(i, j int) bool { return depth(reqs[i].dst) < depth(reqs[j].dst) })

	var out bindMounts
	for _, r := range reqs {
		src := r.src
		if r.create {
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return bindMounts{}, status.Errorf(codes.Internal, "%s: create host_path %q: %v", r.field, src, err)
				}
			} else if err != nil {
				return bindMounts{}, status.Errorf(codes.Internal, "%s: stat host_path %q: %v", r.field, src, err)
			}
		}
		resolved, err := filepath.EvalSymlinks(src)
		if err != nil {
			return bindMounts{}, status.Errorf(codes.FailedPrecondition, "%s: resolve host_path %q: %v", r.field, src, err)
		}
		opts := []string{"rbind"}
		switch r.propagation {
		case runtime.MountPropagation_PROPAGATION_PRIVATE:
			// runc's default rootfs propagation is already rprivate.
			opts = append(opts, "rprivate")
		case runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			if err := rt.ensurePropagation(resolved, false); err != nil {
				return bindMounts{}, err
			}
			opts = append(opts, "rslave")
			if out.rootfsPropagation != "rshared" {
				out.rootfsPropagation = "rslave"
			}
		case runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			if err := rt.ensurePropagation(resolved, true); err != nil {
				return bindMounts{}, err
			}
			opts = append(opts, "rshared")
			out.rootfsPropagation = "rshared"
		default:
			return bindMounts{}, invalidf("%s.propagation: unknown value %d", r.field, r.propagation)
		}
		switch {
		case r.rro:
			opts = append(opts, "rro")
		case r.readonly:
			opts = append(opts, "ro")
		default:
			opts = append(opts, "rw")
		}
		out.mounts = append(out.mounts, specs.Mount{
			Destination: r.dst,
			Type:        "bind",
			Source:      resolved,
			Options:     opts,
		})
	}
	return out, nil
}

// ensurePropagation checks that the mount holding path can propagate
// events into the container: a shared mount for BIDIRECTIONAL, a shared or
// slave one for HOST_TO_CONTAINER. On a host where / is private (no
// systemd) the administrator must run `mount --make-rshared /`.
func (rt Runtime) ensurePropagation(path string, needShared bool) error {
	info, err := rt.lookupMount(path)
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "find the mount of %q: %v", path, err)
	}
	for _, f := range strings.Fields(info.Optional) {
		if strings.HasPrefix(f, "shared:") {
			return nil
		}
		if !needShared && strings.HasPrefix(f, "master:") {
			return nil
		}
	}
	if needShared {
		return status.Errorf(codes.FailedPrecondition, "path %q is mounted on %q but it is not a shared mount", path, info.Mountpoint)
	}
	return status.Errorf(codes.FailedPrecondition, "path %q is mounted on %q but it is not a shared or slave mount", path, info.Mountpoint)
}

// depth counts the separators of a cleaned container path.
func depth(p string) int {
	return strings.Count(filepath.Clean(p), "/")
}

// withContainerMounts installs the prepared binds: it adds the cgroupfs
// mount containerd's default spec lacks, drops default mounts that a bind
// replaces (and everything under /dev when /dev itself is bound), and sets
// the rootfs propagation.
func withContainerMounts(b bindMounts, rt Runtime) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		cgroupOpts := []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
		hasCgroupNS := s.Linux != nil && slices.ContainsFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.CgroupNamespace
		})
		if probeHost().unifiedCgroups && !hasCgroupNS {
			// Without a cgroup namespace the container's cgroup2 mount is
			// the host's superblock: mounting it without the host's
			// nsdelegate / memory_recursiveprot would drop them for the
			// whole host.
			if info, err := rt.lookupMount("/sys/fs/cgroup"); err == nil {
				for _, o := range strings.Split(info.VFSOptions, ",") {
					if o == "nsdelegate" || o == "memory_recursiveprot" {
						cgroupOpts = append(cgroupOpts, o)
					}
				}
			}
		}
		all := append(s.Mounts, specs.Mount{
			Destination: "/sys/fs/cgroup",
			Type:        "cgroup",
			Source:      "cgroup",
			Options:     cgroupOpts,
		})
		bound := map[string]bool{}
		for _, m := range b.mounts {
			bound[filepath.Clean(m.Destination)] = true
		}
		var kept []specs.Mount
		for _, m := range all {
			dst := filepath.Clean(m.Destination)
			if bound[dst] || (bound["/dev"] && strings.HasPrefix(dst, "/dev/")) {
				continue
			}
			kept = append(kept, m)
		}
		s.Mounts = append(kept, b.mounts...)
		if b.rootfsPropagation != "" {
			if s.Linux == nil {
				s.Linux = &specs.Linux{}
			}
			s.Linux.RootfsPropagation = b.rootfsPropagation
		}
		return nil
	}
}

// sandboxBind is a read-only, nosuid/nodev/noexec bind into the pause
// container. The flags are needed for the remount to succeed inside a user
// namespace and cost nothing otherwise.
func sandboxBind(src, dst string) specs.Mount {
	return specs.Mount{
		Destination: dst,
		Type:        "bind",
		Source:      src,
		Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
	}
}
