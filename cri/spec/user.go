package spec

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// userString builds the OCI/Docker user string from the CRI fields:
// run_as_username wins over run_as_user, and run_as_group is appended as
// ":<gid>". A group without a user is an error (critest checks it): the
// group alone cannot say which user to run as. "" means "not set".
func userString(field, username string, uid, gid *runtime.Int64Value) (string, error) {
	var u string
	if uid != nil {
		u = strconv.FormatInt(uid.GetValue(), 10)
	}
	if username != "" {
		u = username
	}
	if u == "" {
		if gid != nil {
			return "", invalidf("%s.run_as_group is set without run_as_user or run_as_username", field)
		}
		return "", nil
	}
	if gid != nil {
		u += ":" + strconv.FormatInt(gid.GetValue(), 10)
	}
	return u, nil
}

// rootfsKey carries a directory to read /etc/passwd and /etc/group from.
type rootfsKey struct{}

// WithRootfsDir returns a context under which the user and group options
// of SandboxOpts and ContainerOpts read /etc/passwd and /etc/group from dir
// instead of from the container's snapshot. It lets tests (and tools that
// have an unpacked rootfs) resolve image users without containerd; the
// server does not need it, because containerd.WithNewSpec runs the options
// after WithNewSnapshot has created the snapshot.
func WithRootfsDir(ctx context.Context, dir string) context.Context {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return context.WithValue(ctx, rootfsKey{}, dir)
}

// rootfsAware runs a containerd user option, pointing it at the directory
// from WithRootfsDir when there is one. containerd's user options read the
// snapshot when the container has one and otherwise spec.Root.Path, which
// must then be absolute; the spec's real (relative) root is restored after.
func rootfsAware(o oci.SpecOpts) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *specs.Spec) error {
		dir, _ := ctx.Value(rootfsKey{}).(string)
		if dir == "" {
			return o(ctx, client, c, s)
		}
		var cc containers.Container
		if c != nil {
			cc = *c
		}
		cc.Snapshotter, cc.SnapshotKey = "", ""
		if s.Root == nil {
			s.Root = &specs.Root{}
		}
		saved := s.Root.Path
		s.Root.Path = dir
		defer func() { s.Root.Path = saved }()
		return o(ctx, client, &cc, s)
	}
}

// withUser sets uid/gid from a user string. A numeric "uid:gid" needs no
// lookup; a name, or a bare uid (whose primary group comes from
// /etc/passwd), is resolved in the image.
func withUser(user string) oci.SpecOpts {
	return rootfsAware(oci.WithUser(user))
}

// withImageGroups adds the groups that list user as a member in the
// image's /etc/group (SupplementalGroupsPolicy Merge), keeping the groups
// already in the spec. user is a name or a numeric uid.
func withImageGroups(user string) oci.SpecOpts {
	lookup := rootfsAware(oci.WithAdditionalGIDs(user))
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *specs.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		before := slices.Clone(s.Process.User.AdditionalGids)
		if err := lookup(ctx, client, c, s); err != nil {
			return err
		}
		s.Process.User.AdditionalGids = mergeGIDs(s.Process.User.AdditionalGids, before)
		return nil
	}
}

// withSupplementalGroups adds the CRI supplemental groups.
func withSupplementalGroups(groups []int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if len(groups) == 0 {
			return nil
		}
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		extra := make([]uint32, 0, len(groups))
		for _, g := range groups {
			extra = append(extra, uint32(g))
		}
		s.Process.User.AdditionalGids = mergeGIDs(s.Process.User.AdditionalGids, extra)
		return nil
	}
}

// mergeGIDs returns the sorted union.
func mergeGIDs(a, b []uint32) []uint32 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// containerUserOpts sets the process user (step 7 of container creation):
// run_as_username, else run_as_user[:run_as_group], else the image's USER,
// else root. Then the supplemental groups: with policy Merge the groups of
// that user in the image's /etc/group plus the CRI groups; with Strict
// only the CRI groups (plus the primary group, which runc always keeps).
func containerUserOpts(sc *runtime.LinuxContainerSecurityContext, img string) ([]oci.SpecOpts, error) {
	const field = "config.linux.security_context"
	user, err := userString(field, sc.GetRunAsUsername(), sc.GetRunAsUser(), sc.GetRunAsGroup())
	if err != nil {
		return nil, err
	}
	// Who to look up in /etc/group: the user part only.
	member := "0"
	switch {
	case user != "":
		member, _, _ = strings.Cut(user, ":")
	case img != "":
		member, _, _ = strings.Cut(img, ":")
	}
	if user == "" {
		user = img
	}
	var opts []oci.SpecOpts
	if user != "" {
		opts = append(opts, withUser(user))
	}
	switch sc.GetSupplementalGroupsPolicy() {
	case runtime.SupplementalGroupsPolicy_Merge:
		opts = append(opts, withImageGroups(member))
	case runtime.SupplementalGroupsPolicy_Strict:
	default:
		return nil, invalidf("%s.supplemental_groups_policy: unknown value %d", field, sc.GetSupplementalGroupsPolicy())
	}
	return append(opts, withSupplementalGroups(sc.GetSupplementalGroups())), nil
}

// UserFromSpec reports the identity of a container's first process for
// ContainerStatus.user: uid, gid and the supplemental groups (sorted, the
// primary group included, as `id -G` shows them).
func UserFromSpec(s *specs.Spec) *runtime.ContainerUser {
	if s == nil || s.Process == nil {
		return &runtime.ContainerUser{}
	}
	u := s.Process.User
	var groups []int64
	for _, g := range u.AdditionalGids {
		groups = append(groups, int64(g))
	}
	slices.Sort(groups)
	return &runtime.ContainerUser{Linux: &runtime.LinuxContainerUser{
		Uid:                int64(u.UID),
		Gid:                int64(u.GID),
		SupplementalGroups: groups,
	}}
}
