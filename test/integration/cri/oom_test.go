package cri

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// memoryControllerWhy says why this machine cannot enforce a container
// memory limit, or "" when it can: a v1 memory hierarchy, or the memory
// controller in the v2 root's cgroup.controllers.
func memoryControllerWhy() string {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return ""
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		for _, c := range strings.Fields(string(b)) {
			if c == "memory" {
				return ""
			}
		}
	}
	return "no cgroup memory controller (neither /sys/fs/cgroup/memory nor memory in the v2 root's cgroup.controllers): memory limits cannot be enforced"
}

// TestOOMKilled: a container over its memory limit is reported with reason
// OOMKilled and exit code 137, and SIGKILLs that are not the OOM killer's
// (the container's own, and StopContainer's) stay reason Error. The hog is
// bounded (a 128 MiB string, built by doubling) so that a kernel that does
// not enforce the limit lets it finish, which is a skip, instead of
// exhausting the machine.
func TestOOMKilled(t *testing.T) {
	if why := memoryControllerWhy(); why != "" {
		t.Skip(why)
	}
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("oom")
	pod.LogDirectory = t.TempDir()
	podID := e.runPod(pod)
	const limit = 32 << 20
	const hog = `x=a; i=0; while [ $i -lt 27 ]; do x=$x$x; i=$((i+1)); done; echo survived`
	for _, tc := range []struct {
		name   string
		script string
		// how: "" waits for the exit; "stop" is StopContainer with
		// timeout 0 (berth-cri's own SIGKILL); "down" kills berth-cri
		// before the container runs over its limit and restarts it once
		// containerd reports the task stopped, so the exit is collected
		// by recovery.
		how    string
		reason string
	}{
		{"over the limit", hog, "", "OOMKilled"},
		{"over the limit while berth-cri is down", "while [ ! -e /bti-go/go ]; do sleep 0.1; done; " + hog, "down", "OOMKilled"},
		{"own SIGKILL", `kill -9 $$`, "", "Error"},
		{"StopContainer", `trap "" TERM; sleep 1000 & wait`, "stop", "Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			// The "down" container starts its hog when this directory
			// holds "go".
			gate := t.TempDir()
			cfg := &runtime.ContainerConfig{
				Metadata: &runtime.ContainerMetadata{Name: name},
				Image:    &runtime.ImageSpec{Image: busybox},
				Command:  []string{"sh", "-c", tc.script},
				LogPath:  name + ".log",
				Mounts:   []*runtime.Mount{{ContainerPath: "/bti-go", HostPath: gate}},
				Linux: &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{
					MemoryLimitInBytes: limit, MemorySwapLimitInBytes: limit}},
			}
			r, err := e.rt.CreateContainer(e.ctx(), &runtime.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			if err != nil {
				t.Fatalf("CreateContainer: %v", err)
			}
			e.startContainer(r.ContainerId)
			switch tc.how {
			case "stop":
				if _, err := e.rt.StopContainer(e.ctx(), &runtime.StopContainerRequest{ContainerId: r.ContainerId, Timeout: 0}); err != nil {
					t.Fatalf("StopContainer: %v", err)
				}
			case "down":
				e.kill9()
				if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				e.waitTaskStopped(r.ContainerId, 2*time.Minute)
				e.start()
			}
			st := e.waitExited(r.ContainerId, 2*time.Minute)
			if tc.reason == "OOMKilled" && st.ExitCode == 0 {
				log, _ := os.ReadFile(filepath.Join(pod.LogDirectory, cfg.LogPath))
				t.Skipf("the %d MiB memory limit was not enforced (the hog finished: %q); this kernel/cgroup setup cannot OOM-kill a container", limit>>20, strings.TrimSpace(string(log)))
			}
			if st.ExitCode != 137 || st.Reason != tc.reason {
				t.Fatalf("exit %d reason %q, want exit 137 reason %q\nberth-cri log:\n%s", st.ExitCode, st.Reason, tc.reason, e.log())
			}
			for _, line := range strings.Split(e.log(), "\n") {
				if strings.Contains(line, "OOM-killed") && strings.Contains(line, r.ContainerId) {
					t.Logf("berth-cri: %s", line)
				}
			}
			// The reason is recorded in containerd, so a restarted
			// berth-cri reports the same.
			e.kill9()
			e.start()
			if st := e.status(r.ContainerId); st.Reason != tc.reason || st.ExitCode != 137 {
				t.Fatalf("after a berth-cri restart: exit %d reason %q, want 137 %s", st.ExitCode, st.Reason, tc.reason)
			}
		})
	}
}

// waitTaskStopped polls containerd (not berth-cri, which may be down)
// until the container's task has exited.
func (e *env) waitTaskStopped(id string, d time.Duration) {
	e.t.Helper()
	ctx := namespaces.WithNamespace(e.ctx(), "k8s.io")
	cl := e.ctd.Client(e.t)
	deadline := time.Now().Add(d)
	for {
		c, err := cl.LoadContainer(ctx, id)
		if err != nil {
			e.t.Fatalf("load container %s: %v", id, err)
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			e.t.Fatalf("task of %s: %v", id, err)
		}
		st, err := task.Status(ctx)
		if err != nil {
			e.t.Fatalf("task status of %s: %v", id, err)
		}
		if st.Status == containerd.Stopped {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("task of %s still %s after %s", id, st.Status, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
