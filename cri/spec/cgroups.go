package spec

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/oci"
)

// systemdScopePrefix is the middle part of runc's "slice:prefix:name"
// systemd cgroup path. containerd uses "cri-containerd"; berth keeps it so
// that node tooling (and kubelet's cgroup accounting) sees the same unit
// names whichever runtime created the container.
const systemdScopePrefix = "cri-containerd"

// CgroupsPath returns the OCI linux.cgroupsPath for a container or sandbox
// with the given id under the pod's cgroup parent.
//
// cgroupfs: parent/id (a plain path). An empty parent gives "": the caller
// then keeps containerd's default /<namespace>/<id>, which is what critest
// expects when it passes no parent for the cgroupfs driver.
//
// systemd: "<slice>:cri-containerd:<id>", where slice is the last element
// of parent (kubelet passes "/kubepods.slice/kubepods-burstable.slice/..."
// and systemd nests slices by name). An empty parent leaves the slice empty,
// which runc resolves to system.slice.
//
// An empty driver is treated as systemd when the parent ends in ".slice",
// otherwise as cgroupfs.
func CgroupsPath(parent, id, driver string) string {
	base := path.Base(parent)
	if parent == "" {
		base = ""
	}
	systemd := driver == CgroupDriverSystemd ||
		(driver == "" && strings.HasSuffix(base, ".slice"))
	if systemd {
		return base + ":" + systemdScopePrefix + ":" + id
	}
	if parent == "" {
		return ""
	}
	return filepath.Join(parent, id)
}

// withCgroupsPath sets the cgroups path unless CgroupsPath left it to the
// default.
func withCgroupsPath(parent, id, driver string) []oci.SpecOpts {
	p := CgroupsPath(parent, id, driver)
	if p == "" {
		return nil
	}
	return []oci.SpecOpts{oci.WithCgroup(p)}
}
