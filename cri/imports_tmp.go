package cri

// Temporary: pins the CRI dependencies in go.mod while the packages that use
// them are written. Removed once they exist.
import (
	_ "github.com/containerd/cgroups/v3/cgroup1/stats"
	_ "github.com/containerd/containerd/api/events"
	_ "github.com/containerd/containerd/api/types/runc/options"
	_ "github.com/containerd/containerd/v2/client"
	_ "github.com/containerd/containerd/v2/contrib/seccomp"
	_ "github.com/containerd/containerd/v2/core/remotes/docker"
	_ "github.com/containerd/containerd/v2/core/remotes/docker/config"
	_ "github.com/containerd/containerd/v2/pkg/cap"
	_ "github.com/containerd/containerd/v2/pkg/cio"
	_ "github.com/containerd/containerd/v2/pkg/netns"
	_ "github.com/containerd/containerd/v2/pkg/oci"
	_ "github.com/containerd/containerd/v2/pkg/seccomp"
	_ "github.com/containerd/errdefs"
	_ "github.com/containerd/typeurl/v2"
	_ "github.com/distribution/reference"
	_ "github.com/opencontainers/image-spec/specs-go/v1"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "google.golang.org/grpc"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"
	_ "k8s.io/cri-streaming/pkg/streaming"
	_ "k8s.io/cri-streaming/pkg/streaming/portforward"
	_ "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)
