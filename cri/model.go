package cri

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and extensions on containerd containers. They are the persistent
// record of a sandbox or container: recover() rebuilds everything from them.
const (
	labelKind      = "berth.dev/kind" // "sandbox" | "container"
	labelSandboxID = "berth.dev/sandbox-id"
	labelState     = "berth.dev/state" // see the state* constants
	labelIP        = "berth.dev/ip"
	labelIPs       = "berth.dev/additional-ips"
	labelCNI       = "berth.dev/cni"   // "pending" while a CNI DEL is owed
	labelNetNS     = "berth.dev/netns" // netns pinned after the pause started (user namespace pods)
	labelStarted   = "berth.dev/started-at"
	labelFinished  = "berth.dev/finished-at"
	labelExitCode  = "berth.dev/exit-code"
	labelReason    = "berth.dev/reason"
	labelMessage   = "berth.dev/message"

	extMeta = "berth.dev/meta"

	kindSandbox   = "sandbox"
	kindContainer = "container"

	stateCreating = "creating"
	stateReady    = "ready"
	stateNotReady = "notready"
	stateCreated  = "created"
	stateRunning  = "running"
	stateExited   = "exited"

	// The CRI container-type annotations. containerd-shim-runc-v2 groups
	// every container that carries the same sandbox-id into one shim
	// process, which saves a process and ~10 MiB per container.
	annoContainerType = "io.kubernetes.cri.container-type"
	annoSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// meta is stored as a containerd container extension. The CRI configs are
// kept as serialized protos so every field kubelet sent survives a restart.
type meta struct {
	Kind      string `json:"kind"`
	ID        string `json:"id"`
	SandboxID string `json:"sandboxID,omitempty"`
	Config    []byte `json:"config"`
	CreatedAt int64  `json:"createdAt"`
	// Sandbox fields.
	NetNSPath      string `json:"netnsPath,omitempty"`
	RuntimeHandler string `json:"runtimeHandler,omitempty"`
	// Container fields.
	ImageRef string `json:"imageRef,omitempty"`
	ImageID  string `json:"imageID,omitempty"`
	LogPath  string `json:"logPath,omitempty"`
}

func init() {
	typeurl.Register(&meta{}, "berth.dev/cri", "meta", "v1")
}

// sandbox is the cached view of one pod sandbox.
type sandbox struct {
	mu sync.Mutex

	ID        string
	Config    *runtime.PodSandboxConfig
	CreatedAt int64
	NetNSPath string
	Handler   string
	State     runtime.PodSandboxState
	IP        string
	ExtraIPs  []string
	Pid       uint32
	// CNIPending is true while a CNI DEL failed and is owed.
	CNIPending bool
	// exited closes when the pause task exits.
	exited chan struct{}
	cntr   containerd.Container
}

func (sb *sandbox) snapshot() sandbox {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sandbox{ID: sb.ID, Config: sb.Config, CreatedAt: sb.CreatedAt, NetNSPath: sb.NetNSPath,
		Handler: sb.Handler, State: sb.State, IP: sb.IP, ExtraIPs: sb.ExtraIPs, Pid: sb.Pid, CNIPending: sb.CNIPending}
}

func (sb *sandbox) hostNetwork() bool {
	return sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtime.NamespaceMode_NODE
}

// container is the cached view of one application container.
type container struct {
	mu sync.Mutex

	ID         string
	SandboxID  string
	Config     *runtime.ContainerConfig
	CreatedAt  int64
	StartedAt  int64
	FinishedAt int64
	ExitCode   int32
	Reason     string
	Message    string
	State      runtime.ContainerState
	ImageRef   string
	ImageID    string
	LogPath    string
	User       *runtime.ContainerUser
	Pid        uint32
	// Starting is set while StartContainer runs, so Remove waits for it.
	Starting bool
	// oom is set by the shim's TaskOOM event; the exit then reports
	// OOMKilled.
	oom bool
	// oomw watches the container's memory cgroup from task creation to
	// exit (oomwatch.go); nil when it could not be set up.
	oomw *oomWatch
	// killing: berth-cri itself sent SIGKILL (StopContainer), so a 137
	// exit needs no wait for OOM evidence.
	killing bool
	// labelMu orders the start and exit label writes to containerd.
	labelMu sync.Mutex

	io     *containerIO
	exited chan struct{}
	cntr   containerd.Container
}

func (c *container) status() container {
	c.mu.Lock()
	defer c.mu.Unlock()
	return container{ID: c.ID, SandboxID: c.SandboxID, Config: c.Config, CreatedAt: c.CreatedAt,
		StartedAt: c.StartedAt, FinishedAt: c.FinishedAt, ExitCode: c.ExitCode, Reason: c.Reason,
		Message: c.Message, State: c.State, ImageRef: c.ImageRef, ImageID: c.ImageID,
		LogPath: c.LogPath, User: c.User, Pid: c.Pid}
}

func marshalConfig(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return b
}

func itoa64(v int64) string { return strconv.FormatInt(v, 10) }

func atoi64(s string) int64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return v
}

func withNamespace(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}

// loadMeta reads berth's extension from a containerd container.
func loadMeta(ctx context.Context, c containerd.Container) (*meta, map[string]string, error) {
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return nil, nil, err
	}
	any, ok := info.Extensions[extMeta]
	if !ok {
		return nil, info.Labels, fmt.Errorf("container %s has no %s extension", c.ID(), extMeta)
	}
	v, err := typeurl.UnmarshalAny(any)
	if err != nil {
		return nil, info.Labels, err
	}
	m, ok := v.(*meta)
	if !ok {
		return nil, info.Labels, fmt.Errorf("container %s: unexpected extension type %T", c.ID(), v)
	}
	return m, info.Labels, nil
}

func nowNano() int64 { return time.Now().UnixNano() }
