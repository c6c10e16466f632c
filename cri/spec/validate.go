package spec

import (
	"fmt"
	"math"
	"net/netip"
	"path"
	"path/filepath"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The validators check what can be checked from the request alone, before
// berth-cri reserves names or creates anything. Errors are gRPC
// InvalidArgument and name the offending field by its proto path, for
// example "config.metadata.name is required". Checks that need the host or
// the runtime's features (RRO support, mount propagation, device nodes,
// seccomp profile files) happen in SandboxOpts and ContainerOpts.

// hostNameMax is the kernel's HOST_NAME_MAX; sethostname fails above it.
const hostNameMax = 64

// maxID bounds uids and gids: runc (and containerd's user parsing) accept
// ids up to MaxInt32.
const maxID = math.MaxInt32

// ValidateSandboxConfig checks a RunPodSandbox request's config.
func ValidateSandboxConfig(c *runtime.PodSandboxConfig) error {
	if c == nil {
		return invalidf("config is required")
	}
	md := c.GetMetadata()
	if md == nil {
		return invalidf("config.metadata is required")
	}
	for _, f := range []struct{ name, v string }{
		{"name", md.GetName()}, {"namespace", md.GetNamespace()}, {"uid", md.GetUid()},
	} {
		if f.v == "" {
			return invalidf("config.metadata.%s is required", f.name)
		}
		if err := noControl("config.metadata."+f.name, f.v); err != nil {
			return err
		}
	}
	if h := c.GetHostname(); h != "" {
		if len(h) > hostNameMax {
			return invalidf("config.hostname must be at most %d bytes, got %d", hostNameMax, len(h))
		}
		if strings.ContainsAny(h, "/ \t\n\x00") {
			return invalidf("config.hostname %q contains an invalid character", h)
		}
	}
	if d := c.GetLogDirectory(); d != "" && !path.IsAbs(d) {
		return invalidf("config.log_directory %q must be an absolute path", d)
	}
	if dns := c.GetDnsConfig(); dns != nil {
		// Each entry becomes one word of resolv.conf; whitespace or a
		// newline would inject other resolver settings.
		for _, l := range []struct {
			name string
			vals []string
		}{{"servers", dns.GetServers()}, {"searches", dns.GetSearches()}, {"options", dns.GetOptions()}} {
			for i, v := range l.vals {
				if v == "" || strings.IndexFunc(v, isSpaceOrControl) >= 0 {
					return invalidf("config.dns_config.%s[%d] %q must be a non-empty word without whitespace", l.name, i, v)
				}
			}
		}
		for i, s := range dns.GetServers() {
			if _, err := netip.ParseAddr(s); err != nil {
				return invalidf("config.dns_config.servers[%d] %q is not an IP address", i, s)
			}
		}
	}
	for i, p := range c.GetPortMappings() {
		field := fmt.Sprintf("config.port_mappings[%d]", i)
		if _, ok := runtime.Protocol_name[int32(p.GetProtocol())]; !ok {
			return invalidf("%s.protocol: unknown value %d", field, p.GetProtocol())
		}
		if p.GetContainerPort() < 1 || p.GetContainerPort() > 65535 {
			return invalidf("%s.container_port %d is out of range (1-65535)", field, p.GetContainerPort())
		}
		if p.GetHostPort() < 0 || p.GetHostPort() > 65535 {
			return invalidf("%s.host_port %d is out of range (0-65535)", field, p.GetHostPort())
		}
		if ip := p.GetHostIp(); ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				return invalidf("%s.host_ip %q is not an IP address", field, ip)
			}
		}
	}
	lx := c.GetLinux()
	if lx == nil {
		return nil
	}
	if p := lx.GetCgroupParent(); hasDotDotElem(p) {
		return invalidf("config.linux.cgroup_parent %q must not contain \"..\"", p)
	}
	for k := range lx.GetSysctls() {
		// runc turns the name into a path under /proc/sys.
		if k == "" || strings.Contains(k, "..") || strings.IndexFunc(k, isSpaceOrControl) >= 0 {
			return invalidf("config.linux.sysctls: invalid sysctl name %q", k)
		}
	}
	sc := lx.GetSecurityContext()
	if sc == nil {
		return nil
	}
	const field = "config.linux.security_context"
	ns := sc.GetNamespaceOptions()
	if err := modeIn(field+".namespace_options.network", ns.GetNetwork(), runtime.NamespaceMode_POD, runtime.NamespaceMode_NODE); err != nil {
		return err
	}
	if err := modeIn(field+".namespace_options.ipc", ns.GetIpc(), runtime.NamespaceMode_POD, runtime.NamespaceMode_NODE); err != nil {
		return err
	}
	if err := modeIn(field+".namespace_options.pid", ns.GetPid(), runtime.NamespaceMode_POD, runtime.NamespaceMode_CONTAINER, runtime.NamespaceMode_NODE); err != nil {
		return err
	}
	if _, _, err := UsernsMappings(field+".namespace_options.userns_options", ns.GetUsernsOptions()); err != nil {
		return err
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil {
		return invalidf("%s.run_as_group is set without run_as_user", field)
	}
	if err := checkIDs(field, sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if _, ok := runtime.SupplementalGroupsPolicy_name[int32(sc.GetSupplementalGroupsPolicy())]; !ok {
		return invalidf("%s.supplemental_groups_policy: unknown value %d", field, sc.GetSupplementalGroupsPolicy())
	}
	if err := checkProfiles(field, sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetApparmor(), ""); err != nil {
		return err
	}
	return nil
}

// ValidateContainerConfig checks a CreateContainer request's config.
// sandbox is the pod's config; when it is given, the checks that compare
// the two run too (privileged, host PID).
func ValidateContainerConfig(c *runtime.ContainerConfig, sandbox *runtime.PodSandboxConfig) error {
	if c == nil {
		return invalidf("config is required")
	}
	if c.GetMetadata() == nil {
		return invalidf("config.metadata is required")
	}
	if c.GetMetadata().GetName() == "" {
		return invalidf("config.metadata.name is required")
	}
	if err := noControl("config.metadata.name", c.GetMetadata().GetName()); err != nil {
		return err
	}
	if c.GetImage() == nil {
		return invalidf("config.image is required")
	}
	if c.GetImage().GetImage() == "" {
		return invalidf("config.image.image is required")
	}
	// execve cannot pass a NUL inside an argument or variable.
	for i, a := range c.GetCommand() {
		if strings.IndexByte(a, 0) >= 0 {
			return invalidf("config.command[%d] contains a NUL byte", i)
		}
	}
	for i, a := range c.GetArgs() {
		if strings.IndexByte(a, 0) >= 0 {
			return invalidf("config.args[%d] contains a NUL byte", i)
		}
	}
	if wd := c.GetWorkingDir(); wd != "" && !path.IsAbs(wd) {
		return invalidf("config.working_dir %q must be an absolute path", wd)
	}
	for i, kv := range c.GetEnvs() {
		switch k := kv.GetKey(); {
		case k == "":
			return invalidf("config.envs[%d].key is required", i)
		case strings.ContainsAny(k, "=\x00"):
			return invalidf("config.envs[%d].key %q must not contain '=' or NUL", i, k)
		}
		if strings.IndexByte(string(kv.GetValue()), 0) >= 0 {
			return invalidf("config.envs[%d].value contains a NUL byte", i)
		}
	}
	for i, m := range c.GetMounts() {
		field := fmt.Sprintf("config.mounts[%d]", i)
		if m.GetContainerPath() == "" {
			return invalidf("%s.container_path is required", field)
		}
		if !path.IsAbs(m.GetContainerPath()) {
			return invalidf("%s.container_path %q must be an absolute path", field, m.GetContainerPath())
		}
		if m.GetImage().GetImage() == "" {
			if m.GetHostPath() == "" {
				return invalidf("%s.host_path is required", field)
			}
			if !path.IsAbs(m.GetHostPath()) {
				return invalidf("%s.host_path %q must be an absolute path", field, m.GetHostPath())
			}
		}
		if _, ok := runtime.MountPropagation_name[int32(m.GetPropagation())]; !ok {
			return invalidf("%s.propagation: unknown value %d", field, m.GetPropagation())
		}
		if m.GetRecursiveReadOnly() {
			if !m.GetReadonly() {
				return invalidf("%s.recursive_read_only requires readonly", field)
			}
			if m.GetPropagation() != runtime.MountPropagation_PROPAGATION_PRIVATE {
				return invalidf("%s.recursive_read_only requires propagation PROPAGATION_PRIVATE, got %s", field, m.GetPropagation())
			}
		}
	}
	for i, d := range c.GetDevices() {
		field := fmt.Sprintf("config.devices[%d]", i)
		if d.GetHostPath() == "" {
			return invalidf("%s.host_path is required", field)
		}
		if !path.IsAbs(d.GetHostPath()) {
			return invalidf("%s.host_path %q must be an absolute path", field, d.GetHostPath())
		}
		if cp := d.GetContainerPath(); cp == "" {
			return invalidf("%s.container_path is required", field)
		} else if !path.IsAbs(cp) {
			return invalidf("%s.container_path %q must be an absolute path", field, cp)
		}
		if p := d.GetPermissions(); strings.Trim(p, "rwm") != "" {
			return invalidf("%s.permissions %q may only contain r, w and m", field, p)
		}
	}
	// The log path is joined to the pod's log directory; it must stay in it.
	if lp := c.GetLogPath(); lp != "" && !filepath.IsLocal(lp) {
		return invalidf("config.log_path %q must be a relative path inside the sandbox log directory", lp)
	}
	if adj := c.GetLinux().GetResources().GetOomScoreAdj(); adj < -1000 || adj > 1000 {
		return invalidf("config.linux.resources.oom_score_adj %d is out of range (-1000..1000)", adj)
	}
	sc := c.GetLinux().GetSecurityContext()
	if sc == nil {
		return nil
	}
	const field = "config.linux.security_context"
	if sc.GetPrivileged() && sandbox != nil && !sandbox.GetLinux().GetSecurityContext().GetPrivileged() {
		return invalidf("%s.privileged: %s", field, errPrivilegedSandbox)
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return invalidf("%s.run_as_group is set without run_as_user or run_as_username", field)
	}
	if u := sc.GetRunAsUsername(); u != "" && (strings.ContainsAny(u, ":\x00") || strings.IndexFunc(u, isSpaceOrControl) >= 0) {
		return invalidf("%s.run_as_username %q is not a valid user name", field, u)
	}
	if err := checkIDs(field, sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if _, ok := runtime.SupplementalGroupsPolicy_name[int32(sc.GetSupplementalGroupsPolicy())]; !ok {
		return invalidf("%s.supplemental_groups_policy: unknown value %d", field, sc.GetSupplementalGroupsPolicy())
	}
	ns := sc.GetNamespaceOptions()
	for _, m := range []struct {
		name string
		mode runtime.NamespaceMode
	}{{"network", ns.GetNetwork()}, {"ipc", ns.GetIpc()}, {"pid", ns.GetPid()}} {
		if _, ok := runtime.NamespaceMode_name[int32(m.mode)]; !ok {
			return invalidf("%s.namespace_options.%s: unknown mode %d", field, m.name, m.mode)
		}
	}
	if ns.GetPid() == runtime.NamespaceMode_TARGET && ns.GetTargetId() == "" {
		return invalidf("%s.namespace_options.target_id is required for pid TARGET", field)
	}
	if ns.GetPid() == runtime.NamespaceMode_NODE && sandbox != nil &&
		sandbox.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() != runtime.NamespaceMode_NODE {
		// Only a host-PID pod may put its containers in the host's PID
		// namespace; otherwise a container could escape the pod's.
		return invalidf("%s.namespace_options.pid is NODE but the sandbox does not use the host PID namespace", field)
	}
	if u := ns.GetUsernsOptions(); u != nil {
		if err := modeIn(field+".namespace_options.userns_options.mode", u.GetMode(), runtime.NamespaceMode_POD, runtime.NamespaceMode_NODE); err != nil {
			return err
		}
	}
	if caps := sc.GetCapabilities(); caps != nil {
		for _, l := range []struct {
			name string
			vals []string
		}{{"add_capabilities", caps.GetAddCapabilities()}, {"drop_capabilities", caps.GetDropCapabilities()}, {"add_ambient_capabilities", caps.GetAddAmbientCapabilities()}} {
			for i, v := range l.vals {
				if v == "" || strings.IndexFunc(v, isSpaceOrControl) >= 0 {
					return invalidf("%s.capabilities.%s[%d] %q is not a capability name", field, l.name, i, v)
				}
			}
		}
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"masked_paths", sc.GetMaskedPaths()}, {"readonly_paths", sc.GetReadonlyPaths()}} {
		for i, p := range l.vals {
			if !path.IsAbs(p) {
				return invalidf("%s.%s[%d] %q must be an absolute path", field, l.name, i, p)
			}
		}
	}
	return checkProfiles(field, sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetApparmor(), sc.GetApparmorProfile())
}

// checkProfiles validates the structured and deprecated seccomp and
// AppArmor fields (their shape only; support is checked when the spec is
// built).
func checkProfiles(field string, seccomp *runtime.SecurityProfile, seccompPath string, apparmor *runtime.SecurityProfile, apparmorProfile string) error {
	if err := checkProfile(field+".seccomp", seccomp); err != nil {
		return err
	}
	if seccomp == nil {
		if _, err := profileFromPath(field+".seccomp_profile_path", seccompPath); err != nil {
			return err
		}
	}
	if err := checkProfile(field+".apparmor", apparmor); err != nil {
		return err
	}
	if apparmor == nil {
		if _, err := profileFromPath(field+".apparmor_profile", apparmorProfile); err != nil {
			return err
		}
	}
	return nil
}

func checkIDs(field string, uid, gid *runtime.Int64Value, groups []int64) error {
	if uid != nil && (uid.GetValue() < 0 || uid.GetValue() > maxID) {
		return invalidf("%s.run_as_user %d is out of range (0-%d)", field, uid.GetValue(), maxID)
	}
	if gid != nil && (gid.GetValue() < 0 || gid.GetValue() > maxID) {
		return invalidf("%s.run_as_group %d is out of range (0-%d)", field, gid.GetValue(), maxID)
	}
	for i, g := range groups {
		if g < 0 || g > maxID {
			return invalidf("%s.supplemental_groups[%d] %d is out of range (0-%d)", field, i, g, maxID)
		}
	}
	return nil
}

func modeIn(field string, m runtime.NamespaceMode, allowed ...runtime.NamespaceMode) error {
	for _, a := range allowed {
		if m == a {
			return nil
		}
	}
	name, ok := runtime.NamespaceMode_name[int32(m)]
	if !ok {
		return invalidf("%s: unknown mode %d", field, m)
	}
	return invalidf("%s: mode %s is not supported here", field, name)
}

// noControl rejects control characters in names that end up in labels,
// log paths and error messages.
func noControl(field, v string) error {
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalidf("%s %q contains a control character", field, v)
		}
	}
	return nil
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}

// hasDotDotElem reports a ".." element in a slash-separated path.
func hasDotDotElem(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}
