package spec

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Runtime describes what the OCI runtime and the host support. The server
// fills it once at startup.
type Runtime struct {
	// CgroupDriver is "cgroupfs" or "systemd"; it selects the cgroupsPath
	// syntax runc expects (see CgroupsPath). Empty means cgroupfs unless
	// the parent is a ".slice".
	CgroupDriver string
	// RROSupported: runc lists "rro" in its features and the kernel is at
	// least 5.12 (mount_setattr). Without it recursive read-only mounts
	// are rejected instead of silently degraded to "ro".
	RROSupported bool
	// SeccompEnabled: the kernel has seccomp (pkg/seccomp.IsEnabled). When
	// false, only Unconfined (or no profile) is accepted.
	SeccompEnabled bool
	// LookupMount returns the mount a path lives on; it backs the shared /
	// slave checks of mount propagation. nil means core/mount.Lookup
	// (/proc/self/mountinfo). Tests replace it.
	LookupMount func(path string) (mount.Info, error)
}

// Cgroup drivers.
const (
	CgroupDriverCgroupfs = "cgroupfs"
	CgroupDriverSystemd  = "systemd"
)

// Annotations set on the OCI spec. The runc v2 shim groups every container
// whose AnnotationSandboxID is equal into one shim process, so these are
// what keeps a pod at one shim; cAdvisor and NRI plugins read the rest.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir    = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationSandboxImageName = "io.kubernetes.cri.podsandbox.image-name"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"

	AnnotationSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	AnnotationSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationSandboxCPUShares = "io.kubernetes.cri.sandbox-cpu-shares"
	AnnotationSandboxMemory    = "io.kubernetes.cri.sandbox-memory"

	ContainerTypeSandbox   = "sandbox"
	ContainerTypeContainer = "container"
)

// rootfsDir is the bundle-relative rootfs that the runc shim mounts the
// snapshot on.
const rootfsDir = "rootfs"

// Well-known paths inside the container.
const (
	etcHostname = "/etc/hostname"
	etcHosts    = "/etc/hosts"
	resolvConf  = "/etc/resolv.conf"
	devShm      = "/dev/shm"
)

// invalidf returns a gRPC InvalidArgument error; kubelet and critest only
// look at the code and the text.
func invalidf(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// unimplementedf marks features berth-cri does not have yet.
func unimplementedf(format string, args ...any) error {
	return status.Errorf(codes.Unimplemented, format, args...)
}

// withRelativeRoot points the spec at the bundle's rootfs directory.
func withRelativeRoot(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Root == nil {
		s.Root = &specs.Root{}
	}
	s.Root.Path = rootfsDir
	return nil
}

// withoutDefaultSecurity removes what containerd's default spec decides on
// its own and CRI must decide instead: an AppArmor profile, a seccomp
// filter and the RLIMIT_NOFILE=1024 rlimit (kubelet expects the runtime's
// inherited limits). The default capability set and namespaces stay: they
// are the CRI defaults too.
func withoutDefaultSecurity(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	s.Process.ApparmorProfile = ""
	s.Process.Rlimits = nil
	if s.Linux != nil {
		s.Linux.Seccomp = nil
	}
	return nil
}

// hostFacts are kernel and cgroup properties that change the spec. They are
// probed once; tests replace probeHost.
type hostFacts struct {
	unifiedCgroups bool // cgroup v2 only: containers get a cgroup namespace
	swap           bool // memory+swap limits can be set
	hugetlb        bool // the hugetlb controller exists
	inUserNS       bool // berth-cri itself runs in a user namespace
}

var probeHost = sync.OnceValue(detectHost)

func detectHost() hostFacts {
	var h hostFacts
	h.unifiedCgroups = cgroups.Mode() == cgroups.Unified
	if h.unifiedCgroups {
		// The root cgroup has no memory.swap.max; look at our own cgroup.
		if _, p, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup"); err == nil {
			h.swap = exists("/sys/fs/cgroup" + p + "/memory.swap.max")
		}
		if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			h.hugetlb = containsField(string(b), "hugetlb")
		}
	} else {
		h.swap = exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		h.hugetlb = exists("/sys/fs/cgroup/hugetlb")
	}
	if b, err := os.ReadFile("/proc/self/uid_map"); err == nil {
		f := strings.Fields(string(b))
		// The initial namespace maps all 2^32-1 ids starting at 0.
		h.inUserNS = !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
	}
	return h
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func containsField(s, word string) bool {
	for _, f := range strings.Fields(s) {
		if f == word {
			return true
		}
	}
	return false
}

// nsPath is the namespace file of a process, used to join the pause
// container's namespaces.
func nsPath(pid uint32, ns string) string {
	return fmt.Sprintf("/proc/%d/ns/%s", pid, ns)
}
