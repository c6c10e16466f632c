// Package cri runs berth-cri as kubelet does: a separate process on a unix
// socket in front of a private containerd (started by the harness, with
// containerd's own CRI plugin disabled), with real runc, real CNI plugins
// and images pulled from a local registry through hosts.toml mirrors.
//
// The tests need root and the tools hack/install-cri-tools.sh builds; they
// skip with the reason otherwise. Every bridge and address they create uses
// the "bti" prefix and 198.18.0.0/15, and is removed in t.Cleanup.
package cri

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/test/crienv"
)

var (
	busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	nginx   = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
	tools   crienv.Paths
	skipWhy string
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv("BERTH_SKIP_INTEGRATION") != "":
		skipWhy = "BERTH_SKIP_INTEGRATION is set"
	case os.Geteuid() != 0:
		skipWhy = "CRI integration tests need root (containerd, runc, netns)"
	}
	if skipWhy == "" {
		var err error
		if tools, err = crienv.Tools(); err != nil {
			skipWhy = err.Error()
		}
	}
	os.Exit(m.Run())
}

// env is one berth-cri on one private containerd, with its own network.
type env struct {
	t    *testing.T
	ctd  *crienv.Containerd
	cri  *crienv.BerthCRI
	net  *crienv.BridgeNetwork
	rt   runtime.RuntimeServiceClient
	img  runtime.ImageServiceClient
	sock string
	dir  string
}

type envOpts struct {
	// conflist, when set, replaces the default bridge network's file; it
	// may use the placeholders @BRIDGE@, @SUBNET@ and @IPAMDIR@.
	conflist string
	// extraBin is an additional CNI bin dir searched first.
	extraBin string
}

// newEnv starts containerd and berth-cri on the reference bridge chain.
func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	_, hostsDir := crienv.EnsureRegistry(t)
	e := &env{t: t, net: crienv.NewBridgeNetwork(t)}
	if o.conflist != "" {
		conf := strings.NewReplacer("@BRIDGE@", e.net.Bridge, "@SUBNET@", e.net.Subnet, "@IPAMDIR@", e.net.IPAMDir).Replace(o.conflist)
		if err := os.WriteFile(filepath.Join(e.net.ConfDir, "10-bti-bridge.conflist"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bins := e.net.BinDirs
	if o.extraBin != "" {
		bins = append([]string{o.extraBin}, bins...)
	}
	e.ctd = crienv.StartContainerd(t, crienv.ContainerdOptions{})
	e.cri = crienv.StartBerthCRI(t, crienv.BerthCRIOptions{Containerd: e.ctd, HostsDir: hostsDir,
		CNIConfDir: e.net.ConfDir, CNIBinDirs: bins})
	e.sock, e.dir = e.cri.Socket(), e.cri.Dir()
	e.rt, e.img = e.cri.Runtime, e.cri.Images
	return e
}

const bridgeConflist = `{
  "cniVersion": "1.0.0",
  "name": "bti-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "@BRIDGE@", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "@SUBNET@"}]], "dataDir": "@IPAMDIR@"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}`

// kill9 kills berth-cri without any chance to clean up; start restarts it.
func (e *env) kill9() { e.cri.Kill9() }

func (e *env) start() {
	e.cri.Start()
	e.rt, e.img = e.cri.Runtime, e.cri.Images
}

func (e *env) log() string { return e.cri.LogTail() }

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) pull(ref string) string {
	e.t.Helper()
	r, err := e.img.PullImage(e.ctx(), &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
	if err != nil {
		e.t.Fatalf("pull %s: %v", ref, err)
	}
	return r.ImageRef
}

func podConfig(name string) *runtime.PodSandboxConfig {
	return &runtime.PodSandboxConfig{
		Metadata:     &runtime.PodSandboxMetadata{Name: name, Namespace: "bti", Uid: "uid-" + name},
		Hostname:     name,
		LogDirectory: "",
		Linux:        &runtime.LinuxPodSandboxConfig{},
		Labels:       map[string]string{"test": "berth"},
	}
}

func (e *env) runPod(cfg *runtime.PodSandboxConfig) string {
	e.t.Helper()
	r, err := e.rt.RunPodSandbox(e.ctx(), &runtime.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		e.t.Fatalf("RunPodSandbox %s: %v\n%s", cfg.Metadata.Name, err, e.log())
	}
	return r.PodSandboxId
}

func (e *env) createContainer(podID string, pod *runtime.PodSandboxConfig, name, image string, cmd ...string) string {
	e.t.Helper()
	cfg := &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: name},
		Image:    &runtime.ImageSpec{Image: image},
		Command:  cmd,
		LogPath:  name + ".log",
		Linux:    &runtime.LinuxContainerConfig{},
	}
	r, err := e.rt.CreateContainer(e.ctx(), &runtime.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		e.t.Fatalf("CreateContainer %s: %v", name, err)
	}
	return r.ContainerId
}

func (e *env) startContainer(id string) {
	e.t.Helper()
	if _, err := e.rt.StartContainer(e.ctx(), &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		e.t.Fatalf("StartContainer: %v\n%s", err, e.log())
	}
}

func (e *env) status(id string) *runtime.ContainerStatus {
	e.t.Helper()
	r, err := e.rt.ContainerStatus(e.ctx(), &runtime.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("ContainerStatus: %v", err)
	}
	return r.Status
}

// waitExited polls until the container exits.
func (e *env) waitExited(id string, d time.Duration) *runtime.ContainerStatus {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := e.status(id)
		if st.State == runtime.ContainerState_CONTAINER_EXITED {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s still %s after %s", id, st.State, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// crictl runs crictl against this berth-cri and returns its stdout; stderr
// goes into the error.
func (e *env) crictl(args ...string) (string, error) {
	cmd := exec.Command(tools.Crictl, e.crictlArgs(args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), err
}

// crictlArgs points crictl at this berth-cri through a config file (so it
// does not warn about a missing /etc/crictl.yaml).
func (e *env) crictlArgs(args ...string) []string {
	cfg := filepath.Join(e.dir, "crictl.yaml")
	if _, err := os.Stat(cfg); err != nil {
		os.WriteFile(cfg, []byte("runtime-endpoint: unix://"+e.sock+"\nimage-endpoint: unix://"+e.sock+"\ntimeout: 120\n"), 0o644)
	}
	return append([]string{"--config", cfg}, args...)
}

func (e *env) mustCrictl(args ...string) string {
	e.t.Helper()
	out, err := e.crictl(args...)
	if err != nil {
		e.t.Fatalf("crictl %s: %v\n%s\nberth-cri log:\n%s", strings.Join(args, " "), err, out, e.log())
	}
	return out
}

// netnsEntries lists the pinned namespaces berth-cri holds.
func (e *env) netnsEntries() []string {
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state", "netns"))
	var out []string
	for _, x := range ents {
		out = append(out, x.Name())
	}
	return out
}

// ipamEntries lists host-local's allocations (files named by address).
func (e *env) ipamEntries() []string { return e.net.Allocations() }
