package spec

import (
	"context"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cap"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Strings of the deprecated *_profile_path / apparmor_profile fields.
const (
	profileRuntimeDefault = "runtime/default"
	profileDockerDefault  = "docker/default"
	profileUnconfined     = "unconfined"
	profileLocalhost      = "localhost/"
)

// capName turns a CRI capability ("net_raw", "NET_RAW" or "CAP_NET_RAW")
// into the OCI form "CAP_NET_RAW".
func capName(c string) string {
	u := strings.ToUpper(c)
	if strings.HasPrefix(u, "CAP_") {
		return u
	}
	return "CAP_" + u
}

func isAll(c string) bool { return strings.EqualFold(c, "ALL") }

// capabilityOpts applies add/drop on top of the default capability set.
// "ALL" is applied first in each list, so {add: [ALL], drop: [CHOWN]} is
// every known capability but CHOWN, and {drop: [ALL], add: [NET_RAW]} is
// just NET_RAW. "ALL" means the capabilities berth-cri itself holds
// (cap.Current()), as containerd does: a node whose bounding set lacks one
// (this CI machine has no CAP_SYS_RESOURCE) would otherwise fail every
// ALL-capabilities container with "unable to apply caps".
func capabilityOpts(c *runtime.Capability) ([]oci.SpecOpts, error) {
	if c == nil {
		return nil, nil
	}
	if len(c.GetAddAmbientCapabilities()) > 0 {
		return nil, unimplementedf("config.linux.security_context.capabilities.add_ambient_capabilities: ambient capabilities are not supported")
	}
	var opts []oci.SpecOpts
	var add, drop []string
	for _, a := range c.GetAddCapabilities() {
		if isAll(a) {
			opts = append(opts, oci.WithCapabilities(currentCaps()))
			continue
		}
		add = append(add, capName(a))
	}
	for _, d := range c.GetDropCapabilities() {
		if isAll(d) {
			opts = append(opts, oci.WithCapabilities(nil))
			continue
		}
		drop = append(drop, capName(d))
	}
	return append(opts, oci.WithAddedCapabilities(add), oci.WithDroppedCapabilities(drop)), nil
}

// withoutAmbientCaps clears ambient capabilities: what they mean for a
// non-root user with added capabilities is not defined by Kubernetes, and
// Docker and containerd never set them.
func withoutAmbientCaps(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// privilegedOpts gives a privileged container every capability berth-cri
// has, no masked or read-only /proc paths, writable /sys and cgroupfs, no
// seccomp, every host device, and an allow-all device cgroup.
func privilegedOpts() []oci.SpecOpts {
	return []oci.SpecOpts{oci.WithPrivileged, oci.WithHostDevices, oci.WithAllDevicesAllowed}
}

// maskedPathOpts replaces containerd's default masked and read-only /proc
// paths. CRI owns them: kubelet always sends its defaults (or empty lists
// for procMount: Unmasked), so the runtime default must be empty, and a
// list is applied only when the field is set. WithPrivileged later clears
// both for privileged containers.
func maskedPathOpts(sc *runtime.LinuxContainerSecurityContext) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithMaskedPaths([]string{}), oci.WithReadonlyPaths([]string{})}
	if m := sc.GetMaskedPaths(); m != nil {
		opts = append(opts, oci.WithMaskedPaths(append([]string(nil), m...)))
	}
	if r := sc.GetReadonlyPaths(); r != nil {
		opts = append(opts, oci.WithReadonlyPaths(append([]string(nil), r...)))
	}
	return opts
}

// profileFromPath converts a deprecated profile string to a
// SecurityProfile; "" gives nil (no profile requested).
func profileFromPath(field, p string) (*runtime.SecurityProfile, error) {
	switch {
	case p == "":
		return nil, nil
	case p == profileRuntimeDefault || p == profileDockerDefault:
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}, nil
	case p == profileUnconfined:
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}, nil
	case strings.HasPrefix(p, profileLocalhost) && len(p) > len(profileLocalhost):
		return &runtime.SecurityProfile{
			ProfileType:  runtime.SecurityProfile_Localhost,
			LocalhostRef: strings.TrimPrefix(p, profileLocalhost),
		}, nil
	default:
		return nil, invalidf("%s: invalid profile %q (want %q, %q or %q<path>)", field, p, profileRuntimeDefault, profileUnconfined, profileLocalhost)
	}
}

// checkProfile validates the shape of a SecurityProfile.
func checkProfile(field string, sp *runtime.SecurityProfile) error {
	if sp == nil {
		return nil
	}
	switch sp.GetProfileType() {
	case runtime.SecurityProfile_RuntimeDefault, runtime.SecurityProfile_Unconfined:
		if sp.GetLocalhostRef() != "" {
			return invalidf("%s.localhost_ref must only be set with profile_type Localhost", field)
		}
	case runtime.SecurityProfile_Localhost:
		if sp.GetLocalhostRef() == "" {
			return invalidf("%s.localhost_ref is required with profile_type Localhost", field)
		}
	default:
		return invalidf("%s.profile_type: unknown value %d", field, sp.GetProfileType())
	}
	return nil
}

// seccompOpts picks the seccomp filter. The structured field wins over the
// deprecated path. No profile means unconfined, as in containerd and
// kubelet's own default (kubelet sends RuntimeDefault explicitly when the
// pod or the kubelet flag asks for it). Privileged processes get none.
// RuntimeDefault is containerd's built-in profile, which depends on the
// final capability set, so this option must come after the capability
// options.
func seccompOpts(field string, sp *runtime.SecurityProfile, deprecatedPath string, privileged bool, rt Runtime) ([]oci.SpecOpts, error) {
	if sp == nil {
		var err error
		if sp, err = profileFromPath(field+"_profile_path", deprecatedPath); err != nil {
			return nil, err
		}
	} else if err := checkProfile(field, sp); err != nil {
		return nil, err
	}
	if privileged || sp == nil || sp.GetProfileType() == runtime.SecurityProfile_Unconfined {
		return nil, nil
	}
	if !rt.SeccompEnabled {
		return nil, invalidf("%s: seccomp is not supported by this kernel", field)
	}
	if sp.GetProfileType() == runtime.SecurityProfile_Localhost {
		// The profile is read (and must be valid JSON) when the spec is built.
		return []oci.SpecOpts{seccomp.WithProfile(strings.TrimPrefix(sp.GetLocalhostRef(), profileLocalhost))}, nil
	}
	return []oci.SpecOpts{seccomp.WithDefaultProfile()}, nil
}

// checkAppArmor rejects AppArmor profiles: berth-cri does not load or
// apply AppArmor (the development hosts have no AppArmor LSM, and kubelet
// refuses pods that need AppArmor on such hosts, so it only ever sends
// "unconfined" or nothing). Accepting a profile and not enforcing it would
// be worse than failing.
func checkAppArmor(field string, sp *runtime.SecurityProfile, deprecated string) error {
	if sp == nil {
		var err error
		if sp, err = profileFromPath(field+"_profile", deprecated); err != nil {
			return err
		}
	} else if err := checkProfile(field, sp); err != nil {
		return err
	}
	if sp == nil || sp.GetProfileType() == runtime.SecurityProfile_Unconfined {
		return nil
	}
	return invalidf("%s: AppArmor is not supported by berth-cri (requested %s)", field, sp.GetProfileType())
}

// SELinux options (selinux_options) are ignored: the hosts have no SELinux
// and containerd, too, only applies labels when SELinux is enabled.

// currentCaps is the capability set of this process, falling back to every
// known capability when it cannot be read.
func currentCaps() []string {
	if c, err := cap.Current(); err == nil && len(c) > 0 {
		return c
	}
	return cap.Known()
}
