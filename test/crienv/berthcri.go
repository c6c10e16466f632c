package crienv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// BuildBerth builds berth-cri and the berth CNI plugin from this tree once
// per test process and returns the directory holding them.
func BuildBerth(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		// Under _output, one dir per test process; dirs of processes that
		// are gone are removed first, so repeated runs leave nothing behind.
		base := filepath.Join(root, "_output", "crienv-bin")
		if ents, err := os.ReadDir(base); err == nil {
			for _, e := range ents {
				if pid, err := strconv.Atoi(e.Name()); err == nil && syscall.Kill(pid, 0) != nil {
					_ = os.RemoveAll(filepath.Join(base, e.Name()))
				}
			}
		}
		dir := filepath.Join(base, strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		for name, pkg := range map[string]string{"berth-cri": "./cmd/berth-cri", "berth": "./cmd/berth-cni", "berth-csi": "./cmd/berth-csi"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", name, err, out)
				return
			}
		}
		buildDir = dir
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// RepoRoot is the module root of this checkout.
func RepoRoot(t testing.TB) string {
	t.Helper()
	r, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// BridgeNetwork is a CNI conf dir holding the reference bridge + host-local
// + portmap + loopback chain on a bridge of its own, the network both
// runtimes get in critest and the perf suite.
type BridgeNetwork struct {
	ConfDir, IPAMDir, Bridge, Subnet, Name string
	BinDirs                                []string
}

var netSeq struct {
	sync.Mutex
	n int
}

// NewBridgeNetwork writes the conflist (subnet 198.19.<n>.0/24 ... of the
// benchmarking range) and removes the bridge and allocations in cleanup.
func NewBridgeNetwork(t testing.TB) *BridgeNetwork {
	t.Helper()
	netSeq.Lock()
	netSeq.n++
	n := netSeq.n
	netSeq.Unlock()
	dir := t.TempDir()
	b := &BridgeNetwork{
		ConfDir: filepath.Join(dir, "net.d"), IPAMDir: filepath.Join(dir, "ipam"),
		Bridge: fmt.Sprintf("btib%d-%d", os.Getpid()%10000, n), Name: "bti-bridge",
		// A /22 per network: the 50-pod and 100-pod runs fit, and
		// parallel test processes pick different blocks by PID.
		Subnet:  fmt.Sprintf("198.19.%d.0/22", ((os.Getpid()+n)%60)*4),
		BinDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
	}
	if len(b.Bridge) > 15 {
		b.Bridge = b.Bridge[:15]
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       b.Name,
		"plugins": []any{
			map[string]any{"type": "bridge", "bridge": b.Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": b.Subnet}}}, "dataDir": b.IPAMDir}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "loopback"},
		},
	}
	js, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.MkdirAll(b.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.ConfDir, "10-bti-bridge.conflist"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", b.Bridge).Run() })
	return b
}

// Allocations lists host-local's addresses in use.
func (b *BridgeNetwork) Allocations() []string {
	ents, _ := os.ReadDir(filepath.Join(b.IPAMDir, b.Name))
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "198.") {
			out = append(out, e.Name())
		}
	}
	return out
}

// BerthCRIOptions configures StartBerthCRI.
type BerthCRIOptions struct {
	Containerd *Containerd
	HostsDir   string
	CNIConfDir string
	CNIBinDirs []string
	// Extra is appended to the TOML config.
	Extra string
}

// BerthCRI is a berth-cri process started by StartBerthCRI.
type BerthCRI struct {
	t       testing.TB
	bin     string
	dir     string
	cfgPath string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	conn    *grpc.ClientConn
	Runtime runtime.RuntimeServiceClient
	Images  runtime.ImageServiceClient
}

// StartBerthCRI runs berth-cri as kubelet's runtime would, as a separate
// process on its own socket, and stops it in cleanup after removing every
// pod through the CRI (so CNI DEL runs and no address leaks).
func StartBerthCRI(t testing.TB, o BerthCRIOptions) *BerthCRI {
	t.Helper()
	bins := BuildBerth(t)
	dir, err := os.MkdirTemp("/run", "bti-cri-")
	if err != nil {
		t.Fatal(err)
	}
	b := &BerthCRI{t: t, bin: filepath.Join(bins, "berth-cri"), dir: dir}
	binDirs, _ := json.Marshal(append([]string{bins}, o.CNIBinDirs...))
	cfg := fmt.Sprintf(`socket = %q
containerd_address = %q
runc_path = %q
pause_image = %q
root_dir = %q
state_dir = %q
cni_conf_dir = %q
cni_bin_dirs = %s
registry_config_dir = %q
metrics_address = ""
log_level = "info"
%s`, b.Socket(), o.Containerd.Address(), o.Containerd.Tools().Runc, SandboxImage,
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), o.CNIConfDir, binDirs, o.HostsDir, o.Extra)
	b.cfgPath = filepath.Join(dir, "berth-cri.toml")
	if err := os.WriteFile(b.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b.logPath = filepath.Join(t.TempDir(), "berth-cri.log")
	t.Cleanup(b.cleanup)
	b.Start()
	return b
}

// Socket is the CRI endpoint path.
func (b *BerthCRI) Socket() string { return filepath.Join(b.dir, "cri.sock") }

// Dir holds the config, root and state of this berth-cri.
func (b *BerthCRI) Dir() string { return b.dir }

// Pid of the running berth-cri, 0 when stopped.
func (b *BerthCRI) Pid() int {
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Start (re)starts the process and waits until it answers Version.
func (b *BerthCRI) Start() {
	b.t.Helper()
	_ = os.Remove(b.Socket())
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(b.bin, "--config", b.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.cmd = cmd
	done := make(chan struct{})
	b.done = done
	go func() { _ = cmd.Wait(); close(done) }()
	conn, err := grpc.NewClient("unix://"+b.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.t.Fatal(err)
	}
	b.conn = conn
	b.Runtime = runtime.NewRuntimeServiceClient(conn)
	b.Images = runtime.NewImageServiceClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := b.Runtime.Version(ctx, &runtime.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			b.cmd = nil
			b.t.Fatalf("berth-cri exited at start:\n%s", b.LogTail())
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("berth-cri does not answer: %v\n%s", err, b.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill9 kills berth-cri with SIGKILL: no chance to clean up or flush.
func (b *BerthCRI) Kill9() {
	if b.cmd == nil {
		return
	}
	b.conn.Close()
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
	b.cmd = nil
}

// Stop stops berth-cri with SIGTERM; containers keep running.
func (b *BerthCRI) Stop() {
	if b.cmd == nil {
		return
	}
	b.conn.Close()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.done
	}
	b.cmd = nil
}

// LogTail returns the end of berth-cri's log.
func (b *BerthCRI) LogTail() string {
	data, _ := os.ReadFile(b.logPath)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

func (b *BerthCRI) cleanup() {
	if b.t.Failed() {
		b.t.Logf("berth-cri log tail:\n%s", b.LogTail())
	}
	if b.cmd == nil {
		b.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if l, err := b.Runtime.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{}); err == nil {
		for _, sb := range l.Items {
			_, _ = b.Runtime.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: sb.Id})
			_, _ = b.Runtime.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: sb.Id})
		}
	}
	b.Stop()
	_ = unmountUnder(b.dir)
	_ = os.RemoveAll(b.dir)
}
