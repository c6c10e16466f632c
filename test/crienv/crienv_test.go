package crienv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/berthdev/berth/test/crienv"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

// TestContainerdWithoutCRI is the environment berth-cri runs on: a private
// containerd without its CRI plugins that pulls critest's busybox through
// the local mirror and runs it with /opt/berth/bin/runc.
func TestContainerdWithoutCRI(t *testing.T) {
	crienv.Require(t)
	_, hostsDir := crienv.EnsureRegistry(t)
	ctd := crienv.StartContainerd(t, crienv.ContainerdOptions{})
	cl := ctd.Client(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "crienv-test"), 2*time.Minute)
	defer cancel()

	t.Run("no CRI plugins", func(t *testing.T) {
		resp, err := cl.IntrospectionService().Plugins(ctx)
		if err != nil {
			t.Fatal(err)
		}
		loaded := map[string]bool{}
		for _, p := range resp.Plugins {
			// A plugin that failed or skipped its init reports InitErr.
			loaded[p.Type+"."+p.ID] = p.InitErr == nil
		}
		for _, id := range crienv.CRIPlugins() {
			if loaded[id] {
				t.Errorf("CRI plugin %s is loaded", id)
			}
		}
		if !loaded["io.containerd.snapshotter.v1.overlayfs"] {
			t.Error("overlayfs snapshotter not loaded")
		}
		// The same through ctr, as a person checking by hand would.
		out, err := exec.Command(ctd.Tools().Ctr, "--address", ctd.Address(), "plugins", "ls").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr plugins ls: %v: %s", err, out)
		}
		if strings.Contains(string(out), "io.containerd.grpc.v1") && strings.Contains(string(out), " cri ") {
			t.Errorf("ctr plugins ls lists the CRI plugin:\n%s", out)
		}
	})

	t.Run("pull and run busybox", func(t *testing.T) {
		resolver := docker.NewResolver(docker.ResolverOptions{
			Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(hostsDir)}),
		})
		img, err := cl.Pull(ctx, busybox, containerd.WithResolver(resolver), containerd.WithPullUnpack)
		if err != nil {
			t.Fatalf("pull %s: %v", busybox, err)
		}
		t.Logf("pulled %s: %s", img.Name(), img.Target().Digest)

		id := "crienv-busybox"
		ctr, err := cl.NewContainer(ctx, id,
			containerd.WithImage(img),
			containerd.WithNewSnapshot(id+"-rootfs", img),
			containerd.WithRuntime("io.containerd.runc.v2", ctd.RuncOptions()),
			containerd.WithNewSpec(oci.WithImageConfig(img),
				oci.WithProcessArgs("sh", "-c", "pgrep sh; id; ls /bin | head")))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Error(err)
			}
		}()
		var stdout, stderr bytes.Buffer
		task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr),
			cio.WithFIFODir(filepath.Join(ctd.Dir(), "fifo"))))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				t.Error(err)
			}
		}()
		exitCh, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		st := <-exitCh
		code, _, err := st.Result()
		if err != nil || code != 0 {
			t.Fatalf("exit %d, %v; stdout:\n%s\nstderr:\n%s", code, err, &stdout, &stderr)
		}
		// Wait for the IO copy to finish before reading the buffers.
		task.IO().Wait()
		t.Logf("output:\n%s", &stdout)
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		// sh is PID 1 of the container; pgrep must not list itself.
		if len(lines) < 3 || lines[0] != "1" {
			t.Fatalf("pgrep sh: want PID 1 alone on the first line, got %q", lines)
		}
		if !strings.HasPrefix(lines[1], "uid=0(root) gid=0(root)") {
			t.Errorf("id: %q", lines[1])
		}
		if !slices.Contains(lines[2:], "[") || stderr.Len() != 0 {
			t.Errorf("ls /bin | head: %q, stderr %q", lines[2:], &stderr)
		}
	})
}

// TestContainerdWithCRI is the reference runtime: containerd's own CRI
// with the same runc, mirror and sandbox image (berth-pause). A host-network
// pod needs no CNI, so this runs a real sandbox plus a busybox container
// through crictl.
func TestContainerdWithCRI(t *testing.T) {
	tools := crienv.Require(t)
	_, hostsDir := crienv.EnsureRegistry(t)
	ctd := crienv.StartContainerd(t, crienv.ContainerdOptions{WithCRI: true, HostsDir: hostsDir})
	crictl := func(args ...string) string {
		t.Helper()
		args = append([]string{"--runtime-endpoint", "unix://" + ctd.Address(), "--timeout", "60s"}, args...)
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(tools.Crictl, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args[4:], " "), err, &stdout, &stderr)
		}
		return strings.TrimSpace(stdout.String())
	}

	crictl("pull", busybox)

	dir := t.TempDir()
	pod := filepath.Join(dir, "pod.json")
	ctr := filepath.Join(dir, "ctr.json")
	writeJSON(t, pod, `{"metadata": {"name": "crienv", "namespace": "crienv", "uid": "crienv-1"},
		"log_directory": "`+dir+`",
		"linux": {"security_context": {"namespace_options": {"network": 2}}}}`)
	writeJSON(t, ctr, `{"metadata": {"name": "busybox"}, "image": {"image": "`+busybox+`"},
		"command": ["sh", "-c", "echo started; sleep 1000"], "log_path": "busybox.log"}`)
	podID := crictl("runp", pod)
	ctrID := crictl("create", podID, ctr, pod)
	crictl("start", ctrID)
	// The pod shares one PID namespace (NamespaceMode POD, the zero
	// value), so PID 1 is the sandbox's berth-pause, running as 65535.
	out := crictl("exec", ctrID, "sh", "-c", "pgrep sleep >/dev/null && id -nu && tr '\\0' '\\n' </proc/1/cmdline && grep ^Uid: /proc/1/status")
	if lines := strings.Split(out, "\n"); len(lines) != 3 || lines[0] != "root" ||
		strings.TrimSpace(lines[1]) != "/pause" || strings.Fields(lines[2])[1] != "65535" {
		t.Errorf("exec: %q", out)
	}
	// The sandbox image came through the mirror and is pinned (never
	// garbage-collected), as pinned_images.sandbox says.
	var images struct {
		Images []struct {
			RepoTags []string `json:"repoTags"`
			Pinned   bool     `json:"pinned"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(crictl("images", "-o", "json")), &images); err != nil {
		t.Fatal(err)
	}
	pinned := false
	for _, img := range images.Images {
		pinned = pinned || slices.Contains(img.RepoTags, crienv.SandboxImage) && img.Pinned
	}
	if !pinned {
		t.Errorf("%s not pulled and pinned: %+v", crienv.SandboxImage, images.Images)
	}
	if ps := crictl("ps", "-q", "--pod", podID); ps != ctrID {
		t.Errorf("crictl ps: %q, want %s", ps, ctrID)
	}
	// Stop and remove here (cleanup would too) to check the sandbox stops
	// cleanly: berth-pause exits 0 on SIGTERM.
	crictl("stopp", podID)
	crictl("rmp", podID)
}

func writeJSON(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
