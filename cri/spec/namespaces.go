package spec

import (
	"context"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// withoutNamespace drops a namespace from the spec, so the process stays in
// berth-cri's (the host's) namespace of that type.
func withoutNamespace(t specs.LinuxNamespaceType) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Linux == nil {
			return nil
		}
		kept := s.Linux.Namespaces[:0]
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != t {
				kept = append(kept, ns)
			}
		}
		s.Linux.Namespaces = kept
		return nil
	}
}

func joinNamespace(t specs.LinuxNamespaceType, path string) oci.SpecOpts {
	return oci.WithLinuxNamespace(specs.LinuxNamespace{Type: t, Path: path})
}

// UsernsMappings validates user namespace options and returns the ID
// mappings of a POD user namespace (nil for NODE or no option). One line
// per map, as containerd's remapped snapshots support, and container ID 0
// must be mapped: a pod whose root is unmapped cannot even start its pause
// process.
func UsernsMappings(field string, u *runtime.UserNamespace) (uids, gids []specs.LinuxIDMapping, err error) {
	if u == nil {
		return nil, nil, nil
	}
	parse := func(name string, m []*runtime.IDMapping) ([]specs.LinuxIDMapping, error) {
		if len(m) != 1 || m[0] == nil {
			return nil, invalidf("%s.%s: exactly one mapping is supported, got %d", field, name, len(m))
		}
		if m[0].GetLength() < 1 {
			return nil, invalidf("%s.%s[0].length must be at least 1", field, name)
		}
		if m[0].GetContainerId() != 0 {
			return nil, invalidf("%s.%s[0].container_id must be 0 (the container's root must be mapped), got %d", field, name, m[0].GetContainerId())
		}
		return []specs.LinuxIDMapping{{ContainerID: 0, HostID: m[0].GetHostId(), Size: m[0].GetLength()}}, nil
	}
	switch u.GetMode() {
	case runtime.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return nil, nil, invalidf("%s: mode NODE takes no uid/gid mappings", field)
		}
		return nil, nil, nil
	case runtime.NamespaceMode_POD:
		if uids, err = parse("uids", u.GetUids()); err != nil {
			return nil, nil, err
		}
		if gids, err = parse("gids", u.GetGids()); err != nil {
			return nil, nil, err
		}
		return uids, gids, nil
	default:
		return nil, nil, invalidf("%s.mode %s is not supported (want NODE or POD)", field, u.GetMode())
	}
}

const usernsField = "config.linux.security_context.namespace_options.userns_options"

// sandboxNamespaceOpts places the pause process: a pinned network
// namespace (created by the server before CNI ADD) or the host's, and new
// or host PID/IPC/UTS namespaces.
func sandboxNamespaceOpts(sb Sandbox) ([]oci.SpecOpts, error) {
	ns := sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	uids, gids, err := UsernsMappings(usernsField, ns.GetUsernsOptions())
	if err != nil {
		return nil, err
	}
	var opts []oci.SpecOpts
	if uids != nil {
		// A pod user namespace: runc creates it with the mappings, and the
		// pause's network namespace inside it (NetNSPath is empty then), so
		// the pod's root owns its network; the server pins that netns from
		// the pause PID before CNI ADD.
		opts = append(opts, oci.WithUserNamespace(uids, gids))
	}
	if ns.GetNetwork() == runtime.NamespaceMode_NODE {
		// The host's UTS namespace goes with the host network: the pod
		// then reports the node's hostname, as kubelet expects.
		opts = append(opts, withoutNamespace(specs.NetworkNamespace), withoutNamespace(specs.UTSNamespace))
	} else if sb.NetNSPath != "" {
		opts = append(opts, joinNamespace(specs.NetworkNamespace, sb.NetNSPath))
	}
	if ns.GetPid() == runtime.NamespaceMode_NODE {
		opts = append(opts, withoutNamespace(specs.PIDNamespace))
	}
	if ns.GetIpc() == runtime.NamespaceMode_NODE {
		opts = append(opts, withoutNamespace(specs.IPCNamespace))
	}
	return opts, nil
}

// containerNamespaceOpts makes an application container share the pod's
// namespaces by joining the pause process's /proc/<pid>/ns files.
//
// Network, IPC and UTS follow the sandbox's configuration (they are pod
// properties; the container's own network/ipc fields are ignored, as in
// containerd). PID follows the container: POD joins the pause process's
// PID namespace, CONTAINER gets a new one, TARGET joins another
// container's, NODE stays in the host's (only in a host-PID pod).
func containerNamespaceOpts(c *runtime.ContainerConfig, sb Sandbox, targetPid func(string) (uint32, error)) ([]oci.SpecOpts, error) {
	sbNS := sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	ns := c.GetLinux().GetSecurityContext().GetNamespaceOptions()
	// The user namespace is a pod property: containers join the pause's.
	uids, gids, err := UsernsMappings(usernsField, sbNS.GetUsernsOptions())
	if err != nil {
		return nil, err
	}
	hostNet := sbNS.GetNetwork() == runtime.NamespaceMode_NODE
	hostIPC := sbNS.GetIpc() == runtime.NamespaceMode_NODE
	needPause := !hostNet || !hostIPC || ns.GetPid() == runtime.NamespaceMode_POD
	if needPause && sb.Pid == 0 {
		return nil, invalidf("sandbox %s has no running pause process to join", sb.ID)
	}

	var opts []oci.SpecOpts
	if uids != nil {
		if sb.Pid == 0 {
			return nil, invalidf("sandbox %s has no running pause process to join", sb.ID)
		}
		opts = append(opts, oci.WithUserNamespace(uids, gids), joinNamespace(specs.UserNamespace, nsPath(sb.Pid, "user")))
	}
	if hostNet {
		opts = append(opts, withoutNamespace(specs.NetworkNamespace), withoutNamespace(specs.UTSNamespace))
	} else {
		opts = append(opts,
			joinNamespace(specs.NetworkNamespace, nsPath(sb.Pid, "net")),
			joinNamespace(specs.UTSNamespace, nsPath(sb.Pid, "uts")))
	}
	if hostIPC {
		opts = append(opts, withoutNamespace(specs.IPCNamespace))
	} else {
		opts = append(opts, joinNamespace(specs.IPCNamespace, nsPath(sb.Pid, "ipc")))
	}

	switch ns.GetPid() {
	case runtime.NamespaceMode_POD:
		opts = append(opts, joinNamespace(specs.PIDNamespace, nsPath(sb.Pid, "pid")))
	case runtime.NamespaceMode_CONTAINER:
		// The default spec already asks for a new PID namespace.
	case runtime.NamespaceMode_TARGET:
		id := ns.GetTargetId()
		if id == "" {
			return nil, invalidf("config.linux.security_context.namespace_options.target_id is required for pid TARGET")
		}
		if targetPid == nil {
			return nil, invalidf("config.linux.security_context.namespace_options.target_id %q: target containers are not available", id)
		}
		pid, err := targetPid(id)
		if err != nil {
			return nil, invalidf("config.linux.security_context.namespace_options.target_id %q: %v", id, err)
		}
		if pid == 0 {
			return nil, invalidf("config.linux.security_context.namespace_options.target_id %q is not running", id)
		}
		opts = append(opts, joinNamespace(specs.PIDNamespace, nsPath(pid, "pid")))
	case runtime.NamespaceMode_NODE:
		if sbNS.GetPid() != runtime.NamespaceMode_NODE {
			return nil, invalidf("config.linux.security_context.namespace_options.pid is NODE but the sandbox does not use the host PID namespace")
		}
		opts = append(opts, withoutNamespace(specs.PIDNamespace))
	default:
		return nil, invalidf("config.linux.security_context.namespace_options.pid: unknown mode %d", ns.GetPid())
	}
	return opts, nil
}
