package spec

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultDevicePermissions applies when a CRI device has no permissions.
// kubelet always sends "mrw"; an empty access string in the device cgroup
// rule would allow nothing, which is never what the caller meant.
const defaultDevicePermissions = "rwm"

// withDevices adds the CRI devices: the device node (or every node under a
// directory) is created in the container with the host's major/minor and
// mode, and the device cgroup allows it with the requested permissions.
// Symlinks such as /dev/disk/by-id/... are resolved first, because the
// node is identified by lstat.
func withDevices(devs []*runtime.Device) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *specs.Spec) error {
		if len(devs) == 0 {
			return nil
		}
		ensureResources(s)
		for i, d := range devs {
			host, err := filepath.EvalSymlinks(d.GetHostPath())
			if err != nil {
				return invalidf("config.devices[%d].host_path %q: %v", i, d.GetHostPath(), err)
			}
			perms := d.GetPermissions()
			if perms == "" {
				perms = defaultDevicePermissions
			}
			if err := oci.WithDevices(host, d.GetContainerPath(), perms)(ctx, client, c, s); err != nil {
				return fmt.Errorf("config.devices[%d]: %w", i, err)
			}
		}
		return nil
	}
}
