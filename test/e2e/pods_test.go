package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestPodLifecycle: a pod runs, answers exec (with its exit codes), writes
// logs, and is gone after delete.
func TestPodLifecycle(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	c.RunPod(t, ns, Shell("life", "", "echo started; exec sleep 3600"))
	out, _, err := c.Exec(ns, "life", "sh", "-c", "echo exec-$((6*7))")
	if err != nil || strings.TrimSpace(out) != "exec-42" {
		t.Fatalf("exec = %q, %v", out, err)
	}
	// kubectl exec's exit code comes back as the error; stderr is separate.
	_, errOut, err := c.Exec(ns, "life", "sh", "-c", "echo oops >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "3") {
		t.Errorf("exec exit 3: %v, want an error with the exit code", err)
	}
	if strings.TrimSpace(errOut) != "oops" {
		t.Errorf("exec stderr = %q, want oops", errOut)
	}
	logs, err := c.Client.CoreV1().Pods(ns).GetLogs("life", &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil || !strings.Contains(string(logs), "started") {
		t.Errorf("logs = %q, %v", logs, err)
	}
	if err := c.Client.CoreV1().Pods(ns).Delete(context.Background(), "life", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 2*time.Minute, time.Second, "pod life deleted", func() (bool, string) {
		_, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), "life", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// TestLogsFollow: `kubectl logs -f` keeps the stream open and delivers a
// line the container writes only after the stream was opened (the test
// triggers it through exec, so the order is certain, not timed).
func TestLogsFollow(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	c.RunPod(t, ns, Shell("follow", "",
		`echo before-stream; while [ ! -f /tmp/go ]; do sleep 0.2; done; echo after-trigger-$(cat /tmp/go); exec sleep 3600`))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.Client.CoreV1().Pods(ns).GetLogs("follow", &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(want string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("log stream ended before %q", want)
				}
				if l == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("log stream: %q not seen: %v", want, ctx.Err())
			}
		}
	}
	next("before-stream")
	token := fmt.Sprint(time.Now().UnixNano())
	c.Sh(t, ns, "follow", "echo "+token+" > /tmp/go.tmp && mv /tmp/go.tmp /tmp/go")
	next("after-trigger-" + token)
}

// TestPortForward: a local port forwarded through the API server reaches
// an HTTP server in the pod (kubelet → berth-cri's PortForward), for two
// connections in a row on the same forward.
func TestPortForward(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	token := fmt.Sprint(time.Now().UnixNano())
	c.RunPod(t, ns, Shell("web", "", "mkdir -p /www && echo pf-"+token+" > /www/index.html && exec httpd -f -p 8080 -h /www"))
	c.WaitPod(t, ns, "web", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	local := c.PortForward(t, ns, "web", 8080)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < 2; i++ {
		var body []byte
		// httpd may not listen yet right after the container starts.
		Eventually(t, time.Minute, time.Second, "GET through port-forward", func() (bool, string) {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", local))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			body, err = io.ReadAll(resp.Body)
			return err == nil && resp.StatusCode == 200, fmt.Sprintf("status %d, %v", resp.StatusCode, err)
		})
		if strings.TrimSpace(string(body)) != "pf-"+token {
			t.Errorf("request %d: body %q, want pf-%s", i, body, token)
		}
	}
}

// TestProbes: exec, httpGet and tcpSocket probes as liveness, readiness
// and startup probes. A failing liveness or startup probe restarts the
// container; a failing readiness probe keeps the pod out of Ready without
// restarting it, until the probe passes. All pods run at once.
func TestProbes(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	httpd := "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"
	execProbe := func(cmd string) corev1.ProbeHandler {
		return corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", cmd}}}
	}
	httpProbe := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(8080)}}
	}
	tcpProbe := func(port int32) corev1.ProbeHandler {
		return corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}}
	}
	probe := func(h corev1.ProbeHandler, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: h, PeriodSeconds: 1, FailureThreshold: failures, TimeoutSeconds: 2}
	}
	const (
		wantReady   = "ready"   // becomes Ready, never restarts
		wantRestart = "restart" // the kubelet restarts the container
		wantGated   = "gated"   // not Ready (no restart) until the trigger file exists, then Ready
	)
	cases := []struct {
		name                         string
		script                       string
		liveness, readiness, startup *corev1.Probe
		want                         string
		trigger                      string // for wantGated: the file that makes the probe pass
		event                        string // the event that shows the probe failing (wantGated) or the kill (wantRestart)
	}{
		{name: "exec-liveness-ok", script: "touch /tmp/healthy; exec sleep 3600",
			liveness: probe(execProbe("test -f /tmp/healthy"), 1), readiness: probe(execProbe("true"), 1), want: wantReady},
		{name: "exec-liveness-fail", script: "exec sleep 3600",
			liveness: probe(execProbe("test -f /tmp/healthy"), 1), want: wantRestart, event: "failed liveness probe"},
		{name: "exec-readiness-gated", script: "exec sleep 3600",
			readiness: probe(execProbe("test -f /tmp/ready"), 1), want: wantGated, trigger: "/tmp/ready", event: "Readiness probe failed"},
		{name: "http-readiness-ok", script: httpd,
			readiness: probe(httpProbe("/healthz"), 1), liveness: probe(httpProbe("/healthz"), 5), want: wantReady},
		{name: "http-readiness-gated", script: httpd,
			readiness: probe(httpProbe("/ready"), 1), want: wantGated, trigger: "/www/ready", event: "Readiness probe failed"},
		{name: "http-liveness-fail", script: httpd,
			liveness: probe(httpProbe("/missing"), 1), want: wantRestart, event: "failed liveness probe"},
		{name: "tcp-readiness-ok", script: httpd,
			readiness: probe(tcpProbe(8080), 1), liveness: probe(tcpProbe(8080), 5), want: wantReady},
		{name: "tcp-liveness-fail", script: httpd,
			liveness: probe(tcpProbe(9999), 1), want: wantRestart, event: "failed liveness probe"},
		{name: "startup-gated", script: "exec sleep 3600",
			startup: probe(execProbe("test -f /tmp/started"), 1000), readiness: probe(execProbe("true"), 1),
			want: wantGated, trigger: "/tmp/started", event: "Startup probe failed"},
		{name: "startup-fail", script: "exec sleep 3600",
			startup: probe(execProbe("false"), 2), want: wantRestart, event: "failed startup probe"},
	}
	var pods []*corev1.Pod
	for _, tc := range cases {
		p := Shell(tc.name, "", tc.script)
		ctr := &p.Spec.Containers[0]
		ctr.LivenessProbe, ctr.ReadinessProbe, ctr.StartupProbe = tc.liveness, tc.readiness, tc.startup
		pods = append(pods, p)
	}
	c.CreatePods(t, ns, pods...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			switch tc.want {
			case wantReady:
				c.WaitPod(t, ns, tc.name, Ready)
				// Let the 1 s probes run a few more times: a passing
				// liveness probe must not restart the container, and a
				// passing readiness probe keeps it Ready. (An observation
				// window, not a timing assertion.)
				time.Sleep(5 * time.Second)
				p := c.WaitPod(t, ns, tc.name, func(*corev1.Pod) bool { return true })
				if n := p.Status.ContainerStatuses[0].RestartCount; n != 0 || !Ready(p) {
					t.Errorf("restarts = %d, ready = %v; want 0, true (events %v)", n, Ready(p), c.PodEvents(ns, tc.name))
				}
			case wantRestart:
				p := c.WaitPod(t, ns, tc.name, func(p *corev1.Pod) bool {
					return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 1
				})
				// Without a readiness probe a running container counts as
				// Ready, so the kubelet's kill event says why it restarted.
				if !hasEvent(c.PodEvents(ns, tc.name), tc.event) {
					t.Errorf("no event %q: %v", tc.event, c.PodEvents(ns, tc.name))
				}
				if last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil {
					t.Errorf("restarted without a last termination state")
				}
			case wantGated:
				Eventually(t, 2*time.Minute, time.Second, tc.event, func() (bool, string) {
					evs := c.PodEvents(ns, tc.name)
					return hasEvent(evs, tc.event), fmt.Sprint(evs)
				})
				p := c.WaitPod(t, ns, tc.name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
				if Ready(p) {
					t.Fatalf("Ready before %s exists", tc.trigger)
				}
				c.Sh(t, ns, tc.name, "touch "+tc.trigger)
				p = c.WaitPod(t, ns, tc.name, Ready)
				cs := p.Status.ContainerStatuses[0]
				if cs.RestartCount != 0 {
					t.Errorf("restarts = %d, want 0: a failing %s must not restart", cs.RestartCount, tc.event)
				}
				if cs.Started == nil || !*cs.Started {
					t.Errorf("container not Started after its startup probe passed")
				}
			}
		})
	}
}

func hasEvent(events []string, substr string) bool {
	for _, e := range events {
		if strings.Contains(e, substr) {
			return true
		}
	}
	return false
}

// TestRestartPolicy: each policy against a container that exits 0 or
// non-zero. Scripts that must restart exit only on their first run (a
// marker in an emptyDir survives restarts), so the final state and the
// restart count are exact rather than a race with the back-off.
func TestRestartPolicy(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	once := func(code int) string { // exit code on the first run, then keep running or succeed
		return fmt.Sprintf("if [ -f /state/ran ]; then %%s; fi; touch /state/ran; exit %d", code)
	}
	cases := []struct {
		name     string
		policy   corev1.RestartPolicy
		script   string
		phase    corev1.PodPhase
		restarts int32
		lastExit int32 // exit code of the restarted instance, or of the final one when it ended
		running  bool  // the final state is a running container
	}{
		{"always-exit0", corev1.RestartPolicyAlways, fmt.Sprintf(once(0), "exec sleep 3600"), corev1.PodRunning, 1, 0, true},
		{"always-exit3", corev1.RestartPolicyAlways, fmt.Sprintf(once(3), "exec sleep 3600"), corev1.PodRunning, 1, 3, true},
		{"onfailure-exit0", corev1.RestartPolicyOnFailure, "exit 0", corev1.PodSucceeded, 0, 0, false},
		{"onfailure-exit3", corev1.RestartPolicyOnFailure, fmt.Sprintf(once(3), "exit 0"), corev1.PodSucceeded, 1, 0, false},
		{"never-exit0", corev1.RestartPolicyNever, "exit 0", corev1.PodSucceeded, 0, 0, false},
		{"never-exit3", corev1.RestartPolicyNever, "exit 3", corev1.PodFailed, 0, 3, false},
	}
	var pods []*corev1.Pod
	for _, tc := range cases {
		p := Shell(tc.name, "", tc.script)
		p.Spec.RestartPolicy = tc.policy
		p.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
		pods = append(pods, p)
	}
	c.CreatePods(t, ns, pods...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := c.WaitPod(t, ns, tc.name, func(p *corev1.Pod) bool {
				if p.Status.Phase != tc.phase || len(p.Status.ContainerStatuses) == 0 {
					return false
				}
				cs := p.Status.ContainerStatuses[0]
				return cs.RestartCount >= tc.restarts && (cs.State.Running != nil) == tc.running
			})
			cs := p.Status.ContainerStatuses[0]
			if cs.RestartCount != tc.restarts {
				t.Errorf("restarts = %d, want %d", cs.RestartCount, tc.restarts)
			}
			term := cs.State.Terminated
			if tc.restarts > 0 && tc.running {
				term = cs.LastTerminationState.Terminated
			}
			if term == nil {
				t.Fatalf("no terminated state to check (state %s, last %s)", stateString(cs.State), stateString(cs.LastTerminationState))
			}
			if term.ExitCode != tc.lastExit {
				t.Errorf("exit code = %d, want %d", term.ExitCode, tc.lastExit)
			}
		})
	}
}

// TestOOMKilled: a container over its memory limit ends OOMKilled (the
// status kubelet shows comes from berth-cri's OOM event or cgroup memory
// events, so "Error" with exit 137 is a failure here).
func TestOOMKilled(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	pod := Shell("oom", "", "x=a; while true; do x=$x$x; done")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	c.CreatePods(t, ns, pod)
	p := c.WaitPod(t, ns, "oom", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Errorf("terminated state = %+v, want reason OOMKilled, exit 137", term)
	}
}
