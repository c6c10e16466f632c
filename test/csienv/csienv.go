// Package csienv runs a real berth-csi (and its fd store) for tests: the
// binary built from this checkout, real FUSE mounts, a private root, state
// directory and sockets, all removed when the test ends.
package csienv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berthdev/berth/internal/mountinfo"
	"github.com/berthdev/berth/test/crienv"
)

// NodeID is the node the test plugin claims to be.
const NodeID = "csitest"

// Require skips a test that cannot mount FUSE here.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("BERTH_SKIP_INTEGRATION") != "" {
		t.Skip("BERTH_SKIP_INTEGRATION is set")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE mounts with mount(2)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// Plugin is a running berth-csi with its fd store.
type Plugin struct {
	t        testing.TB
	Dir      string
	Bin      string
	Endpoint string
	Root     string
	State    string
	FdSock   string
	Metrics  string
	Args     []string
	Conn     *grpc.ClientConn

	Controller csi.ControllerClient
	Node       csi.NodeClient
	Identity   csi.IdentityClient

	plugin, holder *exec.Cmd
}

// freePort finds a loopback port no one listens on, so that test
// processes running side by side never scrape each other's plugins.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start builds berth-csi and starts the fd store and the plugin in mode
// all. Extra flags go to the plugin.
func Start(t testing.TB, extra ...string) *Plugin {
	t.Helper()
	Require(t)
	bin := filepath.Join(crienv.BuildBerth(t), "berth-csi")
	dir, err := os.MkdirTemp("", "berthcsi-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{t: t, Dir: dir, Bin: bin,
		Endpoint: "unix://" + filepath.Join(dir, "csi.sock"),
		Root:     filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		FdSock:  filepath.Join(dir, "fdstore.sock"),
		Metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	p.Args = append([]string{"--mode=all", "--endpoint=" + p.Endpoint, "--node-id=" + NodeID,
		"--root=" + p.Root, "--state-dir=" + p.State, "--metrics-address=" + p.Metrics,
		"--fdstore=unix://" + p.FdSock, "--log-level=debug"}, extra...)
	t.Cleanup(p.cleanup)
	p.StartHolder()
	p.StartPlugin()
	conn, err := grpc.NewClient(p.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.Conn = conn
	p.Controller, p.Node, p.Identity = csi.NewControllerClient(conn), csi.NewNodeClient(conn), csi.NewIdentityClient(conn)
	return p
}

func (p *Plugin) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(p.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

// StartHolder starts the fd store.
func (p *Plugin) StartHolder() {
	p.t.Helper()
	cmd := exec.Command(p.Bin, "fdstore", "--socket=unix://"+p.FdSock)
	cmd.Stdout, cmd.Stderr = p.logFile("fdstore.log"), p.logFile("fdstore.log")
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.holder = cmd
	waitSocket(p.t, p.FdSock)
}

// StartPlugin starts berth-csi and waits for its socket.
func (p *Plugin) StartPlugin() {
	p.t.Helper()
	sock := strings.TrimPrefix(p.Endpoint, "unix://")
	os.Remove(sock)
	cmd := exec.Command(p.Bin, p.Args...)
	log := p.logFile("berth-csi.log")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.plugin = cmd
	waitSocket(p.t, sock)
}

// KillPlugin kills berth-csi with SIGKILL and reaps it.
func (p *Plugin) KillPlugin() {
	if p.plugin == nil {
		return
	}
	p.plugin.Process.Kill()
	p.plugin.Wait()
	p.plugin = nil
}

// KillHolder kills the fd store with SIGKILL and reaps it.
func (p *Plugin) KillHolder() {
	if p.holder == nil {
		return
	}
	p.holder.Process.Kill()
	p.holder.Wait()
	p.holder = nil
}

// Log returns the plugin's log so far.
func (p *Plugin) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "berth-csi.log"))
	return string(b)
}

func waitSocket(t testing.TB, path string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("socket %s did not appear", path)
}

// Ctx is a context for one call.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (p *Plugin) cleanup() {
	if p.Conn != nil {
		p.Conn.Close()
	}
	p.KillPlugin()
	p.KillHolder()
	// A FUSE server that is gone would leave every access hanging; abort
	// the connections first, then unmount deepest first.
	AbortFUSE(p.Dir)
	for _, m := range MountsUnder(p.Dir) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if p.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(p.Dir, "berth-csi.log"))
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		p.t.Logf("berth-csi log (tail):\n%s", b)
	}
	os.RemoveAll(p.Dir)
}

// AbortFUSE aborts the FUSE connection of every mount at or below dir,
// through fusectl (mounted here if it is not).
func AbortFUSE(dir string) {
	if _, err := os.Stat("/sys/fs/fuse/connections"); err == nil {
		syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "")
	}
	for _, m := range mountinfo.Under(dir) {
		if strings.HasPrefix(m.FSType, "fuse") {
			os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", m.Minor), []byte("1"), 0)
		}
	}
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	var out []string
	for _, m := range mountinfo.Under(dir) {
		out = append(out, m.Point)
	}
	return out
}

// MountCap is a read-write single-node filesystem capability.
func MountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// Volume creates, stages and publishes a volume of size bytes; it returns
// the volume ID and the published path.
func (p *Plugin) Volume(name string, size int64) (string, string) {
	p.t.Helper()
	ctx := Ctx(p.t)
	v, err := p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}, VolumeCapabilities: []*csi.VolumeCapability{MountCap()}})
	if err != nil {
		p.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	id := v.GetVolume().GetVolumeId()
	return id, p.Publish(id)
}

// Publish stages and publishes an existing volume.
func (p *Plugin) Publish(id string) string {
	p.t.Helper()
	ctx := Ctx(p.t)
	staging := filepath.Join(p.Dir, "staging", id)
	target := filepath.Join(p.Dir, "pods", id, "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: MountCap()}); err != nil {
		p.t.Fatalf("NodeStageVolume %s: %v", id, err)
	}
	if _, err := p.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		TargetPath: target, VolumeCapability: MountCap()}); err != nil {
		p.t.Fatalf("NodePublishVolume %s: %v", id, err)
	}
	return target
}

// Unpublish unpublishes and unstages a volume.
func (p *Plugin) Unpublish(id string) {
	p.t.Helper()
	ctx := Ctx(p.t)
	staging := filepath.Join(p.Dir, "staging", id)
	target := filepath.Join(p.Dir, "pods", id, "mount")
	if _, err := p.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		p.t.Fatalf("NodeUnpublishVolume %s: %v", id, err)
	}
	if _, err := p.Node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		p.t.Fatalf("NodeUnstageVolume %s: %v", id, err)
	}
}
