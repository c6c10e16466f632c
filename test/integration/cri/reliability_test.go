package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kill -9 berth-cri while pods run: after the restart every sandbox and
// container is listed with its state, exit codes survive (including an exit
// that happened while berth-cri was down), and logs continue.
func TestKill9Restart(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("bti-restart")
	pod.LogDirectory = t.TempDir()
	podID := e.runPod(pod)
	ticker := e.createContainer(podID, pod, "ticker", busybox, "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done")
	e.startContainer(ticker)
	exited := e.createContainer(podID, pod, "exited", busybox, "sh", "-c", "exit 3")
	e.startContainer(exited)
	e.waitExited(exited, 20*time.Second)
	later := e.createContainer(podID, pod, "later", busybox, "sh", "-c", "sleep 2; exit 5")
	e.startContainer(later)
	created := e.createContainer(podID, pod, "created", busybox, "true")
	sbBefore, err := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(pod.LogDirectory, "ticker.log")
	waitFor(t, 10*time.Second, func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), "tick-3") })

	e.kill9()
	// "later" exits while berth-cri is down; the ticker keeps writing into
	// its FIFO (the shim holds it open, so it blocks rather than dies).
	time.Sleep(3 * time.Second)
	e.start()

	sb, err := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatalf("sandbox lost after restart: %v", err)
	}
	if sb.Status.State != runtime.PodSandboxState_SANDBOX_READY || sb.Status.Network.Ip != sbBefore.Status.Network.Ip {
		t.Fatalf("sandbox after restart: %s ip %s, want READY ip %s", sb.Status.State, sb.Status.Network.Ip, sbBefore.Status.Network.Ip)
	}
	for _, tc := range []struct {
		id    string
		state runtime.ContainerState
		code  int32
	}{
		{ticker, runtime.ContainerState_CONTAINER_RUNNING, 0},
		{exited, runtime.ContainerState_CONTAINER_EXITED, 3},
		{later, runtime.ContainerState_CONTAINER_EXITED, 5},
		{created, runtime.ContainerState_CONTAINER_CREATED, 0},
	} {
		st := e.status(tc.id)
		if st.State != tc.state || st.ExitCode != tc.code {
			t.Errorf("%s: state %s exit %d, want %s %d", st.Metadata.Name, st.State, st.ExitCode, tc.state, tc.code)
		}
		if tc.state == runtime.ContainerState_CONTAINER_EXITED && st.FinishedAt == 0 {
			t.Errorf("%s: finished_at lost", st.Metadata.Name)
		}
	}
	// Logs continue: new ticks after the restart, and no tick is missing.
	b0, _ := os.ReadFile(logPath)
	n0 := strings.Count(string(b0), "tick-")
	waitFor(t, 10*time.Second, func() bool { b, _ := os.ReadFile(logPath); return strings.Count(string(b), "tick-") > n0+5 })
	b, _ := os.ReadFile(logPath)
	for i := 0; i < strings.Count(string(b), "tick-")-1; i++ {
		if !strings.Contains(string(b), fmt.Sprintf(" stdout F tick-%d\n", i)) {
			t.Fatalf("tick-%d missing from the log after restart", i)
		}
	}
	// The created container can still start, and exec works after restart.
	e.startContainer(created)
	if st := e.waitExited(created, 20*time.Second); st.ExitCode != 0 {
		t.Fatalf("created container exit %d", st.ExitCode)
	}
	if r, err := e.rt.ExecSync(e.ctx(), &runtime.ExecSyncRequest{ContainerId: ticker, Cmd: []string{"echo", "alive"}, Timeout: 10}); err != nil || strings.TrimSpace(string(r.Stdout)) != "alive" {
		t.Fatalf("exec after restart: %v", err)
	}
}

// flakyPlugin is a CNI plugin placed first in the chain that fails the
// verb named in its config once (tracked by a marker file), and otherwise
// passes the previous result through.
const flakyPlugin = `#!/bin/sh
conf=$(cat)
marker="$FLAKY_DIR/failed-$CNI_COMMAND"
case " $FLAKY_VERB " in *" $CNI_COMMAND "*) inject=1 ;; *) inject=0 ;; esac
if [ "$inject" = 1 ] && [ ! -e "$marker" ]; then
  touch "$marker"
  echo '{"cniVersion":"1.0.0","code":11,"msg":"injected failure","details":"bti-flaky"}'
  exit 1
fi
case "$CNI_COMMAND" in
  ADD) printf '%s' "$conf" | jq -c .prevResult ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
exit 0
`

// A CNI ADD that fails leaves nothing behind; a DEL that fails is retried
// and the address is released once it succeeds.
func TestCNIFailureInjection(t *testing.T) {
	for _, verb := range []string{"ADD", "DEL", "ADD DEL"} {
		t.Run(strings.ReplaceAll(verb, " ", "+"), func(t *testing.T) {
			bin := t.TempDir()
			flakyDir := t.TempDir()
			wrapper := fmt.Sprintf("#!/bin/sh\nFLAKY_DIR=%s FLAKY_VERB='%s' exec sh %s/flaky.sh\n", flakyDir, verb, bin)
			os.WriteFile(filepath.Join(bin, "flaky.sh"), []byte(flakyPlugin), 0o755)
			os.WriteFile(filepath.Join(bin, "bti-flaky"), []byte(wrapper), 0o755)
			conf := strings.Replace(bridgeConflist, `{"type": "loopback"}`, `{"type": "loopback"}, {"type": "bti-flaky"}`, 1)
			e := newEnv(t, envOpts{conflist: conf, extraBin: bin})
			e.pull(busybox)
			pod := podConfig("bti-flaky-" + strings.ToLower(strings.ReplaceAll(verb, " ", "-")))
			if verb == "ADD DEL" {
				// ADD fails, and so does the rollback's DEL: the address
				// must not leak. The sandbox stays, NOTREADY and owing a
				// DEL, until kubelet's Stop/Remove (or the retry loop)
				// releases it.
				_, err := e.rt.RunPodSandbox(e.ctx(), &runtime.RunPodSandboxRequest{Config: pod})
				if err == nil {
					t.Fatal("RunPodSandbox succeeded with a failing ADD")
				}
				l, _ := e.rt.ListPodSandbox(e.ctx(), &runtime.ListPodSandboxRequest{})
				if len(l.Items) != 1 || l.Items[0].State != runtime.PodSandboxState_SANDBOX_NOTREADY {
					t.Fatalf("want one NOTREADY sandbox owing a DEL, got %v", l.Items)
				}
				if len(e.ipamEntries()) != 1 {
					t.Fatalf("allocations while the DEL is owed: %v", e.ipamEntries())
				}
				id := l.Items[0].Id
				if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatalf("StopPodSandbox retrying the DEL: %v", err)
				}
				if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatal(err)
				}
				assertNoLeftovers(t, e)
				return
			}
			if verb == "ADD" {
				_, err := e.rt.RunPodSandbox(e.ctx(), &runtime.RunPodSandboxRequest{Config: pod})
				if err == nil || !strings.Contains(err.Error(), "injected failure") {
					t.Fatalf("RunPodSandbox with a failing ADD: %v", err)
				}
				assertNoLeftovers(t, e)
				// The next attempt succeeds.
				podID := e.runPod(pod)
				if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
					t.Fatal(err)
				}
				if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
					t.Fatal(err)
				}
				assertNoLeftovers(t, e)
				return
			}
			podID := e.runPod(pod)
			if len(e.ipamEntries()) != 1 {
				t.Fatalf("allocations after ADD: %v", e.ipamEntries())
			}
			_, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID})
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("StopPodSandbox with a failing DEL: %v", err)
			}
			if len(e.ipamEntries()) != 1 {
				t.Fatalf("address released although DEL failed: %v", e.ipamEntries())
			}
			// kubelet retries Stop; berth-cri retries the owed DEL.
			if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatalf("retried StopPodSandbox: %v", err)
			}
			if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
				t.Fatal(err)
			}
			assertNoLeftovers(t, e)
		})
	}
}

func assertNoLeftovers(t *testing.T, e *env) {
	t.Helper()
	if ips := e.ipamEntries(); len(ips) != 0 {
		t.Fatalf("addresses leaked: %v", ips)
	}
	if n := e.netnsEntries(); len(n) != 0 {
		t.Fatalf("netns leaked: %v", n)
	}
	l, err := e.rt.ListPodSandbox(e.ctx(), &runtime.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 0 {
		t.Fatalf("sandboxes left: %d", len(l.Items))
	}
	cs, err := e.ctd.Client(t).Containers(namespaces.WithNamespace(e.ctx(), "k8s.io"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Fatalf("%d containerd containers left", len(cs))
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "state", "sandboxes"))
	if len(ents) != 0 {
		t.Fatalf("sandbox state dirs left: %d", len(ents))
	}
}

// 50 pods created in parallel each get a distinct address and a running
// container; all are then removed without leaks.
func TestParallelPods(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	const n = 50
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			pod := podConfig(fmt.Sprintf("bti-par-%02d", i))
			r, err := e.rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: pod})
			if err != nil {
				errs[i] = err
				return
			}
			c, err := e.rt.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: r.PodSandboxId, SandboxConfig: pod,
				Config: &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: "c"}, Image: &runtime.ImageSpec{Image: busybox},
					Command: []string{"sleep", "3600"}, Linux: &runtime.LinuxContainerConfig{}}})
			if err != nil {
				errs[i] = err
				return
			}
			if _, err := e.rt.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				errs[i] = err
				return
			}
			st, err := e.rt.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId})
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = st.Status.Network.Ip
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range ips {
		if errs[i] != nil {
			t.Fatalf("pod %d: %v", i, errs[i])
		}
		if ips[i] == "" || seen[ips[i]] {
			t.Fatalf("pod %d: address %q empty or duplicated", i, ips[i])
		}
		seen[ips[i]] = true
	}
	l, _ := e.rt.ListContainers(e.ctx(), &runtime.ListContainersRequest{Filter: &runtime.ContainerFilter{
		State: &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_RUNNING}}})
	if len(l.Containers) != n {
		t.Fatalf("%d running containers, want %d", len(l.Containers), n)
	}
	ps, _ := e.rt.ListPodSandbox(e.ctx(), &runtime.ListPodSandboxRequest{})
	for _, sb := range ps.Items {
		if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Fatal(err)
		}
	}
	assertNoLeftovers(t, e)
}

// A kubelet retry of RunPodSandbox while the first call is still working
// gets the same sandbox, never "name is reserved".
func TestRetryJoinsInflight(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("bti-retry")
	var wg sync.WaitGroup
	ids := make([]string, 4)
	errs := make([]error, 4)
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := e.rt.RunPodSandbox(e.ctx(), &runtime.RunPodSandboxRequest{Config: pod})
			errs[i] = err
			if err == nil {
				ids[i] = r.PodSandboxId
			}
		}(i)
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("call %d: id %q err %v; want %q", i, ids[i], errs[i], ids[0])
		}
	}
	// And after it finished, a retry returns the same ID too.
	if again := e.runPod(pod); again != ids[0] {
		t.Fatalf("retry after completion got %s, want %s", again, ids[0])
	}
	// A first call whose client gives up is not abandoned halfway.
	pod2 := podConfig("bti-retry-2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, _ = e.rt.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: pod2})
	cancel()
	id2 := e.runPod(pod2)
	st, err := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: id2})
	if err != nil || st.Status.State != runtime.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox after an abandoned first call: %v %v", st, err)
	}
	l, _ := e.rt.ListPodSandbox(e.ctx(), &runtime.ListPodSandboxRequest{})
	if len(l.Items) != 2 {
		t.Fatalf("%d sandboxes, want 2 (no duplicate from the retries)", len(l.Items))
	}
}

// StopContainer sends SIGTERM, waits for the timeout, then SIGKILLs a
// container that ignores it; a container that exits by itself reports its
// own code and reason.
func TestStopTimeoutThenKill(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("bti-stop")
	podID := e.runPod(pod)
	stubborn := e.createContainer(podID, pod, "stubborn", busybox, "sh", "-c", "trap '' TERM; while true; do sleep 1; done")
	e.startContainer(stubborn)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if _, err := e.rt.StopContainer(e.ctx(), &runtime.StopContainerRequest{ContainerId: stubborn, Timeout: 2}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st := e.status(stubborn)
	if st.ExitCode != 137 || took < 2*time.Second {
		t.Fatalf("exit %d after %s; want 137 (SIGKILL) after the 2s timeout", st.ExitCode, took)
	}
	ok := e.createContainer(podID, pod, "ok", busybox, "true")
	e.startContainer(ok)
	if st := e.waitExited(ok, 20*time.Second); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Fatalf("true: exit %d reason %q", st.ExitCode, st.Reason)
	}
	// Stopping and removing an exited or missing container is fine.
	if _, err := e.rt.StopContainer(e.ctx(), &runtime.StopContainerRequest{ContainerId: ok, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := e.rt.RemoveContainer(e.ctx(), &runtime.RemoveContainerRequest{ContainerId: ok}); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
	}
}

// GetContainerEvents (kubelet's Evented PLEG) streams the lifecycle of
// containers and sandboxes, with their status attached.
func TestContainerEvents(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := e.rt.GetContainerEvents(ctx, &runtime.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *runtime.ContainerEventResponse, 64)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	time.Sleep(200 * time.Millisecond) // the subscription is in place
	pod := podConfig("bti-events")
	podID := e.runPod(pod)
	id := e.createContainer(podID, pod, "c", busybox, "sh", "-c", "exit 2")
	e.startContainer(id)
	e.waitExited(id, 20*time.Second)
	want := []runtime.ContainerEventType{
		runtime.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtime.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtime.ContainerEventType_CONTAINER_STOPPED_EVENT,
	}
	var got []runtime.ContainerEventType
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended; got %v", got)
			}
			if ev.ContainerId != id {
				continue
			}
			if ev.PodSandboxStatus.GetId() != podID || len(ev.ContainersStatuses) != 1 {
				t.Fatalf("event without the pod and container status: %v", ev)
			}
			got = append(got, ev.ContainerEventType)
			if ev.ContainerEventType == runtime.ContainerEventType_CONTAINER_STOPPED_EVENT && ev.ContainersStatuses[0].ExitCode != 2 {
				t.Fatalf("stopped event exit code %d, want 2", ev.ContainersStatuses[0].ExitCode)
			}
		case <-deadline:
			t.Fatalf("events for %s: got %v, want %v", id, got, want)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
}
