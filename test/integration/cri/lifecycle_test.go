package cri

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The whole pod lifecycle through crictl, the tool operators use: pull,
// runp, create, start, exec, logs, inspect, stop, rm, rmp.
func TestCrictlLifecycle(t *testing.T) {
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	logDir := filepath.Join(dir, "logs")
	pod := map[string]any{
		"metadata":      map[string]any{"name": "bti-crictl", "namespace": "bti", "uid": "uid-crictl"},
		"hostname":      "bti-crictl",
		"log_directory": logDir,
		"dns_config":    map[string]any{"servers": []string{"198.18.0.53"}, "searches": []string{"bti.svc"}, "options": []string{"ndots:2"}},
		"linux":         map[string]any{},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "main"},
		"image":    map[string]any{"image": busybox},
		"command":  []string{"sh", "-c", "echo hello-stdout; echo hello-stderr >&2; printf partial; sleep 3600"},
		"log_path": "main.log",
		"linux":    map[string]any{},
	}
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		b, _ := json.Marshal(v)
		os.WriteFile(p, b, 0o644)
		return p
	}
	podJSON, ctrJSON := write("pod.json", pod), write("ctr.json", ctr)

	e.mustCrictl("pull", busybox)
	podID := e.mustCrictl("runp", podJSON)
	id := e.mustCrictl("create", podID, ctrJSON, podJSON)
	e.mustCrictl("start", id)

	if out := e.mustCrictl("exec", id, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 198.18.0.53") || !strings.Contains(out, "search bti.svc") {
		t.Fatalf("resolv.conf from DNSConfig not seen:\n%s", out)
	}
	if out := e.mustCrictl("exec", id, "hostname"); out != "bti-crictl" {
		t.Fatalf("hostname = %q", out)
	}
	// The pod got an address from the bridge network on eth0.
	out := e.mustCrictl("inspectp", podID)
	var insp struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
			State   string              `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &insp); err != nil {
		t.Fatalf("inspectp: %v\n%s", err, out)
	}
	_, subnet, _ := net.ParseCIDR(e.net.Subnet)
	if ip := net.ParseIP(insp.Status.Network.IP); ip == nil || !subnet.Contains(ip) || insp.Status.State != "SANDBOX_READY" {
		t.Fatalf("pod status %+v, want READY with an IP in %s", insp.Status, e.net.Subnet)
	}
	if out := e.mustCrictl("exec", id, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, insp.Status.Network.IP) {
		t.Fatalf("eth0 inside the pod does not carry %s:\n%s", insp.Status.Network.IP, out)
	}

	// Logs: crictl parses the CRI format (it prints the container's
	// stderr on its own stderr, so stdout is checked here); the raw file
	// must hold both streams in the CRI format.
	waitFor(t, 10*time.Second, func() bool {
		out, _ := e.crictl("logs", "--stream", "stdout", id)
		return strings.Contains(out, "hello-stdout")
	})
	raw, err := os.ReadFile(filepath.Join(logDir, "main.log"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) `)
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if !line.MatchString(l) {
			t.Fatalf("log line not in CRI format: %q", l)
		}
	}
	if !strings.Contains(string(raw), " stdout F hello-stdout\n") || !strings.Contains(string(raw), " stderr F hello-stderr\n") {
		t.Fatalf("log content:\n%s", raw)
	}

	// Stats and the cAdvisor-style metrics see the running container.
	cs, err := e.rt.ContainerStats(e.ctx(), &runtime.ContainerStatsRequest{ContainerId: id})
	if err != nil || cs.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 || cs.Stats.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Fatalf("ContainerStats: %v %v", cs, err)
	}
	// kubelet stats the writable layer's mountpoint; an empty one fails
	// the node's whole stats summary, and eviction with it.
	if mp := cs.Stats.GetWritableLayer().GetFsId().GetMountpoint(); mp == "" {
		t.Fatalf("ContainerStats: writable layer has no filesystem mountpoint: %v", cs.Stats.GetWritableLayer())
	} else if _, err := os.Stat(mp); err != nil {
		t.Fatalf("ContainerStats: writable layer mountpoint: %v", err)
	}
	pm, err := e.rt.ListPodSandboxMetrics(e.ctx(), &runtime.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pm.PodMetrics {
		for _, c := range p.ContainerMetrics {
			for _, m := range c.Metrics {
				if c.ContainerId == id && m.Name == "container_memory_working_set_bytes" && m.Value.GetValue() > 0 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatalf("no working-set metric for %s in %v", id, pm)
	}

	e.mustCrictl("stop", "--timeout", "2", id)
	st := e.status(id)
	if st.State != runtime.ContainerState_CONTAINER_EXITED || st.ExitCode != 143 || st.Reason != "Error" {
		t.Fatalf("after stop: state %s exit %d reason %q, want EXITED 143 (SIGTERM) Error", st.State, st.ExitCode, st.Reason)
	}
	// The trailing partial line is flushed as a P record at exit.
	raw, _ = os.ReadFile(filepath.Join(logDir, "main.log"))
	if !strings.Contains(string(raw), " stdout P partial\n") {
		t.Fatalf("partial line not logged as P:\n%s", raw)
	}
	e.mustCrictl("rm", id)
	e.mustCrictl("stopp", podID)
	e.mustCrictl("rmp", podID)
	if out := e.mustCrictl("pods", "-q"); out != "" {
		t.Fatalf("pods left: %s", out)
	}
	if n := e.netnsEntries(); len(n) != 0 {
		t.Fatalf("netns left: %v", n)
	}
	if ips := e.ipamEntries(); len(ips) != 0 {
		t.Fatalf("addresses leaked: %v", ips)
	}
	// Idempotence: stopping and removing again is fine (through the RPCs:
	// crictl itself looks the pod up first and gives up).
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Exec with stdin, attach and port-forward through the streaming server.
func TestStreaming(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	e.pull(nginx)
	pod := podConfig("bti-stream")
	pod.LogDirectory = t.TempDir()
	podID := e.runPod(pod)

	// exec -i: stdin reaches the process and its EOF ends it.
	sh := e.createContainer(podID, pod, "sh", busybox, "sleep", "3600")
	e.startContainer(sh)
	cmd := exec.Command(tools.Crictl, e.crictlArgs("exec", "-i", sh, "sh", "-c", "tr a-z A-Z")...)
	cmd.Stdin = strings.NewReader("hello exec\n")
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "HELLO EXEC" {
		t.Fatalf("exec -i: %v %q", err, out)
	}
	// A non-zero exit code travels back through the stream.
	if _, err := e.crictl("exec", sh, "sh", "-c", "exit 7"); err == nil {
		t.Fatal("exit 7 reported as success")
	}
	// ExecSync timeout kills the process.
	_, err = e.rt.ExecSync(e.ctx(), &runtime.ExecSyncRequest{ContainerId: sh, Cmd: []string{"sleep", "30"}, Timeout: 1})
	if err == nil {
		t.Fatal("ExecSync with a 1s timeout on sleep 30 succeeded")
	}
	r, err := e.rt.ExecSync(e.ctx(), &runtime.ExecSyncRequest{ContainerId: sh, Cmd: []string{"sh", "-c", "pgrep sleep || true"}, Timeout: 10})
	if err != nil {
		t.Fatal(err)
	}
	if pids := strings.Fields(string(r.Stdout)); len(pids) != 1 {
		t.Fatalf("timed-out exec still running: pgrep sleep = %q (want only PID 1's sleep)", r.Stdout)
	}

	// attach: a shell with stdin reads our command.
	att := &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: "attach"}, Image: &runtime.ImageSpec{Image: busybox},
		Command: []string{"sh"}, Stdin: true, LogPath: "attach.log", Linux: &runtime.LinuxContainerConfig{}}
	cr, err := e.rt.CreateContainer(e.ctx(), &runtime.CreateContainerRequest{PodSandboxId: podID, Config: att, SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	e.startContainer(cr.ContainerId)
	acmd := exec.Command(tools.Crictl, e.crictlArgs("attach", "-i", cr.ContainerId)...)
	pr, pw, _ := os.Pipe()
	acmd.Stdin = pr
	var abuf strings.Builder
	var mu sync.Mutex
	acmd.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return abuf.Write(p) })
	if err := acmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	fmt.Fprintln(pw, "echo attached-ok")
	waitFor(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(abuf.String(), "attached-ok") })
	fmt.Fprintln(pw, "exit 0")
	pw.Close()
	_ = acmd.Wait()
	pr.Close()

	// port-forward to the nginx stand-in listening on :80 in the pod.
	web := e.createContainer(podID, pod, "web", nginx)
	e.startContainer(web)
	port := 18000 + int(time.Now().UnixNano()%1000)
	pf := exec.Command(tools.Crictl, e.crictlArgs("port-forward", podID, fmt.Sprintf("%d:80", port))...)
	pf.Stdout, pf.Stderr = os.Stderr, os.Stderr
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	var resp *http.Response
	waitFor(t, 20*time.Second, func() bool {
		resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("port-forward GET: %d", resp.StatusCode)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A pod user namespace: the pod's root is host uid 100000, its rootfs is
// idmapped, and its network namespace (owned by the user namespace) still
// gets an address from CNI.
func TestUserNamespacePod(t *testing.T) {
	e := newEnv(t, envOpts{})
	st, err := e.rt.Status(e.ctx(), &runtime.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	supported := false
	for _, h := range st.RuntimeHandlers {
		if h.Name == "" && h.Features.GetUserNamespaces() {
			supported = true
		}
	}
	if !supported {
		t.Skip("runc on this node has no idmapped-mount support: the handler does not advertise user namespaces")
	}
	e.pull(busybox)
	m := []*runtime.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	pod := podConfig("bti-userns")
	pod.LogDirectory = t.TempDir()
	pod.Linux.SecurityContext = &runtime.LinuxSandboxSecurityContext{NamespaceOptions: &runtime.NamespaceOption{
		UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: m, Gids: m}}}
	podID := e.runPod(pod)
	id := e.createContainer(podID, pod, "u", busybox, "sh", "-c", "cat /proc/self/uid_map; touch /root-owned && echo rootfs-writable; ip -4 -o addr show eth0")
	e.startContainer(id)
	if st := e.waitExited(id, 30*time.Second); st.ExitCode != 0 {
		b, _ := os.ReadFile(filepath.Join(pod.LogDirectory, "u.log"))
		t.Fatalf("exit %d:\n%s", st.ExitCode, b)
	}
	b, _ := os.ReadFile(filepath.Join(pod.LogDirectory, "u.log"))
	out := string(b)
	if !regexp.MustCompile(`\s0\s+100000\s+65536`).MatchString(out) || !strings.Contains(out, "rootfs-writable") {
		t.Fatalf("user namespace not applied:\n%s", out)
	}
	sb, _ := e.rt.PodSandboxStatus(e.ctx(), &runtime.PodSandboxStatusRequest{PodSandboxId: podID})
	if ip := sb.GetStatus().GetNetwork().GetIp(); ip == "" || !strings.Contains(out, ip) {
		t.Fatalf("pod IP %q not on eth0 inside the user namespace:\n%s", ip, out)
	}
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtime.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtime.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if n := e.netnsEntries(); len(n) != 0 {
		t.Fatalf("netns left: %v", n)
	}
	if a := e.ipamEntries(); len(a) != 0 {
		t.Fatalf("addresses left: %v", a)
	}
}

// Exec over websocket with the v4 channel protocol, which the streaming
// server speaks besides SPDY: channel 1 carries stdout, channel 3 the
// final status.
func TestExecWebsocket(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.pull(busybox)
	pod := podConfig("bti-ws")
	podID := e.runPod(pod)
	id := e.createContainer(podID, pod, "c", busybox, "sleep", "3600")
	e.startContainer(id)
	resp, err := e.rt.Exec(e.ctx(), &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo ws-ok; exit 3"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := websocket.NewConfig(strings.Replace(resp.Url, "http://", "ws://", 1), "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocol = []string{"v4.channel.k8s.io"}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", resp.Url, err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(30 * time.Second))
	var stdout, status strings.Builder
	for {
		var msg []byte
		if err := websocket.Message.Receive(ws, &msg); err != nil {
			break // the server closes the connection after the status
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case 1:
			stdout.Write(msg[1:])
		case 3:
			status.Write(msg[1:])
		}
	}
	if stdout.String() != "ws-ok\n" {
		t.Fatalf("stdout over websocket = %q", stdout.String())
	}
	if !strings.Contains(status.String(), "NonZeroExitCode") || !strings.Contains(status.String(), `"message":"3"`) {
		t.Fatalf("status over websocket = %s, want exit code 3", status.String())
	}
}
