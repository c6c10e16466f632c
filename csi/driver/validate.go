package driver

import (
	"fmt"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// mountFlags are the mount options a capability may carry; they apply to
// the bind mount a pod sees.
var mountFlags = map[string]bool{
	"ro": true, "rw": true, "noexec": true, "exec": true, "nosuid": true,
	"nodev": true, "noatime": true, "relatime": true, "nodiratime": true,
}

// checkCapabilities accepts filesystem volumes in every access mode:
// multi-node modes are served on the one node the topology pins the volume
// to, which is how ReadWriteMany works within a node.
func checkCapabilities(field string, caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	for i, c := range caps {
		if err := checkCapability(fmt.Sprintf("%s[%d]", field, i), c); err != nil {
			return err
		}
	}
	return nil
}

func checkCapability(field string, c *csi.VolumeCapability) error {
	if c == nil {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
		return status.Errorf(codes.InvalidArgument, "%s.access_mode is required", field)
	}
	if c.GetBlock() != nil {
		return status.Errorf(codes.InvalidArgument, "%s.access_type: block volumes are not supported, only mount", field)
	}
	m := c.GetMount()
	if m == nil {
		return status.Errorf(codes.InvalidArgument, "%s.access_type is required (mount)", field)
	}
	for _, f := range m.GetMountFlags() {
		if !mountFlags[f] {
			return status.Errorf(codes.InvalidArgument, "%s.mount_flags: %q is not supported (supported: %s)", field, f, supportedFlags())
		}
	}
	return nil
}

func supportedFlags() string {
	var out []string
	for f := range mountFlags {
		out = append(out, f)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// readOnlyMode reports whether an access mode allows no writes.
func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}
