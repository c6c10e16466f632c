// Package e2e runs berth's end-to-end suites against a running kind
// cluster (`make up`, context kind-berth). They are skipped unless
// BERTH_E2E=1, so `make test` never needs a cluster; `make e2e` sets it.
//
// Every test works in its own namespace (e2e-<test>-<n>), deleted when the
// test ends; a failing test first logs the namespace's events, each pod's
// state and the tail of every container's logs, so a failure in CI can be
// read without the cluster. Tests that touch nodes (berth-cri restarts, CNI
// config files) reach them with `docker exec`, as kind's nodes are
// containers.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
)

// BusyboxImage is preloaded in berth's kind node image under its usual name
// (Debian's busybox-static: sh, nc, httpd, wget, ping, nslookup, dd, df).
const BusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

// Cluster is the cluster under test.
type Cluster struct {
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
}

// Connect skips the test unless BERTH_E2E=1, and connects to the kubectl
// context BERTH_E2E_CONTEXT (default kind-berth).
func Connect(t *testing.T) *Cluster {
	t.Helper()
	if os.Getenv("BERTH_E2E") == "" {
		t.Skip("end-to-end test: run `make up` then `make e2e` (BERTH_E2E=1)")
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: contextName()}).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig context %s: %v", contextName(), err)
	}
	// The suites create pods and poll them at a modest rate; the default
	// client-side limit (5 QPS) would make the waits the bottleneck.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Client: cs, Dynamic: dc}
}

func contextName() string {
	if c := os.Getenv("BERTH_E2E_CONTEXT"); c != "" {
		return c
	}
	return "kind-berth"
}

// kindClusterName is the kind cluster behind the context (kind-<name>); its
// nodes are the docker containers the node-level helpers exec into.
func kindClusterName() string {
	return strings.TrimPrefix(contextName(), "kind-")
}

// Namespace creates a namespace for one test and deletes it afterwards;
// if the test failed, it first dumps what is in it.
func (c *Cluster) Namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	return c.NamespaceRole(t, "", labels)
}

// NamespaceRole is Namespace for tests with several namespaces: role ends
// up in the name (e2e-<test>-<role>-<n>).
func (c *Cluster) NamespaceRole(t *testing.T, role string, labels map[string]string) string {
	t.Helper()
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	suffix := fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	if role != "" {
		suffix = "-" + role + suffix
	}
	// Keep the e2e- prefix and the unique suffix; shorten the middle.
	if max := 63 - len("e2e-") - len(suffix); len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	name := "e2e-" + base + suffix
	_, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpNamespace(t, name)
		}
		c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// DumpNamespace logs a namespace's events, its pods' states and the tail of
// each container's logs (current and previous instance).
func (c *Cluster) DumpNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	c.dumpEvents(t, ns)
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("dump %s: list pods: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s/%s on %s: phase %s, IP %s", ns, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
		for _, cs := range p.Status.ContainerStatuses {
			t.Logf("  container %s: ready=%v restarts=%d state=%s last=%s id=%s", cs.Name, cs.Ready, cs.RestartCount,
				stateString(cs.State), stateString(cs.LastTerminationState), cs.ContainerID)
			for _, previous := range []bool{false, true} {
				tail := int64(30)
				logs, err := c.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{
					Container: cs.Name, TailLines: &tail, Previous: previous}).DoRaw(ctx)
				if err != nil || len(logs) == 0 {
					continue
				}
				t.Logf("  logs %s (previous=%v):\n%s", cs.Name, previous, indent(string(logs)))
			}
		}
	}
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return fmt.Sprintf("waiting(%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%s, exit %d)", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "-"
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// Schedulable returns the names of the nodes pods can run on, sorted.
func (c *Cluster) Schedulable(t *testing.T) []string {
	t.Helper()
	nodes, err := c.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes.Items {
		if n.Spec.Unschedulable {
			continue
		}
		tainted := false
		for _, tn := range n.Spec.Taints {
			if tn.Effect == corev1.TaintEffectNoSchedule {
				tainted = true
			}
		}
		if !tainted {
			out = append(out, n.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TwoNodes returns two schedulable nodes, or skips.
func (c *Cluster) TwoNodes(t *testing.T) (string, string) {
	t.Helper()
	nodes := c.Schedulable(t)
	if len(nodes) < 2 {
		t.Skipf("needs two schedulable nodes, have %v", nodes)
	}
	return nodes[0], nodes[1]
}

// BusyboxPod is a pod that sleeps, pinned to node when given. Pinning goes
// through the scheduler (a hostname nodeSelector), not spec.nodeName, so
// PVCs with WaitForFirstConsumer binding get their node.
func BusyboxPod(name, node string, args ...string) *corev1.Pod {
	if len(args) == 0 {
		args = []string{"sleep", "3600"}
	}
	grace := int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent, Command: args,
			}},
		},
	}
	if node != "" {
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	return p
}

// Shell is BusyboxPod running a shell script.
func Shell(name, node, script string) *corev1.Pod {
	return BusyboxPod(name, node, "sh", "-c", script)
}

// WithVolume mounts a PVC at /data in the pod's container.
func WithVolume(p *corev1.Pod, claim string) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "data", MountPath: "/data"})
	return p
}

func running(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Ready reports the pod's Ready condition.
func Ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RunPod creates a pod and waits until it runs (or, for pods that end,
// until it ends), returning its latest state.
func (c *Cluster) RunPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	return c.RunPods(t, ns, pod)[0]
}

// RunPods creates all pods first, so they start in parallel, then waits
// for each to run; it returns their latest states in order.
func (c *Cluster) RunPods(t *testing.T, ns string, pods ...*corev1.Pod) []*corev1.Pod {
	t.Helper()
	c.CreatePods(t, ns, pods...)
	out := make([]*corev1.Pod, len(pods))
	for i, p := range pods {
		out[i] = c.WaitPod(t, ns, p.Name, running)
	}
	return out
}

// CreatePods creates pods without waiting.
func (c *Cluster) CreatePods(t *testing.T, ns string, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
}

// WaitPod polls a pod until cond holds, for up to three minutes.
func (c *Cluster) WaitPod(t *testing.T, ns, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	return c.WaitPodFor(t, ns, name, 3*time.Minute, cond)
}

// WaitPodFor is WaitPod with a timeout.
func (c *Cluster) WaitPodFor(t *testing.T, ns, name string, timeout time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, nil // transient API errors (other helpers restart things): keep polling
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		state := "never seen"
		if last != nil {
			state = fmt.Sprintf("phase %s on %s", last.Status.Phase, last.Spec.NodeName)
			for _, cs := range last.Status.ContainerStatuses {
				state += fmt.Sprintf("; %s ready=%v restarts=%d %s", cs.Name, cs.Ready, cs.RestartCount, stateString(cs.State))
			}
		}
		t.Fatalf("pod %s/%s: condition not met: %v (%s)", ns, name, err, state)
	}
	return last
}

// Eventually polls fn every interval until it returns true, failing the
// test with what's last message after timeout.
func Eventually(t *testing.T, timeout, interval time.Duration, what string, fn func() (bool, string)) {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(context.Background(), interval, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		ok, msg = fn()
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %v: %s", what, timeout, msg)
	}
}

// PodEvents returns the reason: message of every event about a pod.
func (c *Cluster) PodEvents(ns, pod string) []string {
	evs, err := c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + pod})
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

func (c *Cluster) dumpEvents(t *testing.T, ns string) {
	evs, err := c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].LastTimestamp.Before(&evs.Items[j].LastTimestamp) })
	for _, e := range evs.Items {
		t.Logf("event %s %s: %s %s (x%d)", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, e.Count)
	}
}

// Exec runs a command in a pod's first container through the API server
// (kubelet → CRI streaming) and returns stdout, stderr and the error.
func (c *Cluster) Exec(ns, pod string, cmd ...string) (string, string, error) {
	return c.ExecTimeout(time.Minute, ns, pod, cmd...)
}

// ExecTimeout is Exec with a deadline.
func (c *Cluster) ExecTimeout(timeout time.Duration, ns, pod string, cmd ...string) (string, string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}

// Sh runs a shell script in a pod and fails the test if it fails.
func (c *Cluster) Sh(t *testing.T, ns, pod, script string) string {
	t.Helper()
	out, errOut, err := c.Exec(ns, pod, "sh", "-c", script)
	if err != nil {
		t.Fatalf("exec in %s/%s: %q: %v\nstdout: %s\nstderr: %s", ns, pod, script, err, out, errOut)
	}
	return out
}

// PortForward forwards a local port to a pod's port through the API server
// (kubelet → CRI PortForward), like `kubectl port-forward`, and returns the
// local port; the forward stops when the test ends.
func (c *Cluster) PortForward(t *testing.T, ns, pod string, port int) int {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	u := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var out, errOut bytes.Buffer
	fw, err := portforward.New(dialer, []string{fmt.Sprintf("0:%d", port)}, stop, ready, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() { close(stop); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward %s/%s:%d: %v (%s)", ns, pod, port, err, errOut.String())
	case <-time.After(time.Minute):
		t.Fatalf("port-forward %s/%s:%d: not ready within a minute (%s)", ns, pod, port, errOut.String())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("port-forward ports: %v, %v", ports, err)
	}
	return int(ports[0].Local)
}

// Kubectl runs kubectl against the test's context.
func Kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("kubectl", append([]string{"--context", contextName()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// NodeExec runs a command on a kind node (a docker container named after
// the node) and returns its combined output.
func NodeExec(node string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", node}, args...)...).CombinedOutput()
	return string(out), err
}

// NodesOfCluster lists every node (schedulable or not), sorted.
func (c *Cluster) NodesOfCluster(t *testing.T) []string {
	t.Helper()
	nodes, err := c.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes.Items {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}

// RequireNodeAccess skips unless `docker exec` reaches node (the suites can
// also run against a kind cluster from another host's kubeconfig).
func RequireNodeAccess(t *testing.T, node string) {
	t.Helper()
	if out, err := NodeExec(node, "true"); err != nil {
		t.Skipf("needs `docker exec %s` (kind node of cluster %s): %v %s", node, kindClusterName(), err, out)
	}
}

// NodeJSON reads a JSON file on a node into v.
func NodeJSON(node, path string, v any) error {
	out, err := NodeExec(node, "cat", path)
	if err != nil {
		return fmt.Errorf("%s:%s: %v %s", node, path, err, out)
	}
	return json.Unmarshal([]byte(out), v)
}
