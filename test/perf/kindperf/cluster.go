package kindperf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// Names the suite gives what it creates in the clusters, so a leftover is
// recognisable (and swept by the next run).
const (
	NamespacePrefix = "bperf-kind-"
	SuiteLabel      = "berth.dev/perf-suite"
	SuiteLabelValue = "kind"
	// HostPathDir is the fio hostPath directory on the node.
	HostPathDir = "/var/lib/bperf-kind-fio"
)

// BusyboxImage is preloaded in both node images (hack/kind/test-images.sh).
const BusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

// Cluster is one kind cluster under test.
type Cluster struct {
	Role    string // Berth or Ref
	Context string // kubeconfig context, kind-<name>
	Config  *rest.Config
	Client  kubernetes.Interface
	Workers []string // schedulable nodes, sorted
}

// Connect opens the kubeconfig context and lists the schedulable nodes;
// the suite needs two of them (same node and cross node).
func Connect(ctx context.Context, role, kubeContext string) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig context %s: %w", kubeContext, err)
	}
	// The suite lists and watches hard during the pod start bursts; the
	// default 5 QPS would throttle the client, not the cluster.
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Role: role, Context: kubeContext, Config: cfg, Client: cs}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: list nodes: %w", kubeContext, err)
	}
	for _, n := range nodes.Items {
		if n.Spec.Unschedulable || !nodeReady(&n) {
			continue
		}
		tainted := false
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				tainted = true
			}
		}
		if !tainted {
			c.Workers = append(c.Workers, n.Name)
		}
	}
	sort.Strings(c.Workers)
	if len(c.Workers) < 2 {
		return nil, fmt.Errorf("%s: needs two schedulable Ready nodes, has %v", kubeContext, c.Workers)
	}
	return c, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Env describes the cluster for the report.
func (c *Cluster) Env(ctx context.Context) ClusterEnv {
	e := ClusterEnv{Role: c.Role, Context: c.Context}
	if v, err := c.Client.Discovery().ServerVersion(); err == nil {
		e.ServerVersion = v.GitVersion
	}
	if nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			ne := NodeEnv{Name: n.Name, Kubelet: n.Status.NodeInfo.KubeletVersion, Runtime: n.Status.NodeInfo.ContainerRuntimeVersion,
				OSImage: n.Status.NodeInfo.OSImage, Kernel: n.Status.NodeInfo.KernelVersion}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					ne.InternalIP = a.Address
				}
			}
			e.Nodes = append(e.Nodes, ne)
		}
		sort.Slice(e.Nodes, func(i, j int) bool { return e.Nodes[i].Name < e.Nodes[j].Name })
	}
	for _, ns := range []string{"kube-system", "berth-system"} {
		dss, err := c.Client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, ds := range dss.Items {
			var imgs []string
			for _, ct := range ds.Spec.Template.Spec.Containers {
				imgs = append(imgs, ct.Image)
			}
			e.DaemonSets = append(e.DaemonSets, fmt.Sprintf("%s/%s (%s)", ns, ds.Name, strings.Join(imgs, ", ")))
		}
	}
	// kind names a node's container after the node.
	if out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{.Config.Image}} {{.Image}}", c.Workers[0]).Output(); err == nil {
		f := strings.Fields(string(out))
		if len(f) == 2 {
			e.NodeImage, e.NodeImageID = f[0], f[1]
		}
	}
	e.Networks, _ = NodeNetworks(ctx, c.Workers[0])
	return e
}

// NodeNetworks lists the names of the CNI networks in a kind node's
// /etc/cni/net.d: what berth-cri offers for berth.dev/network.
func NodeNetworks(ctx context.Context, node string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "docker", "exec", node, "sh", "-c",
		`for f in /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json; do [ -f "$f" ] && cat "$f" && echo; done; true`).Output()
	if err != nil {
		return nil, fmt.Errorf("docker exec %s: %w", node, err)
	}
	return ConflistNames(out), nil
}

// ConflistNames reads the "name" of every JSON document in b, in order.
func ConflistNames(b []byte) []string {
	var names []string
	d := json.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Name string `json:"name"`
		}
		if err := d.Decode(&doc); err != nil {
			break
		}
		if doc.Name != "" {
			names = append(names, doc.Name)
		}
	}
	return names
}

// Namespace creates a labelled namespace for this run.
func (c *Cluster) Namespace(ctx context.Context, what string) (string, error) {
	name := fmt.Sprintf("%s%s-%04x", NamespacePrefix, what, rand.IntN(1<<16))
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: map[string]string{SuiteLabel: SuiteLabelValue}}}, metav1.CreateOptions{})
	return name, err
}

// DeleteNamespace deletes ns and waits until it is gone, so its pods no
// longer load the nodes when the next part starts.
func (c *Cluster) DeleteNamespace(ctx context.Context, ns string, wait time.Duration) error {
	err := c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("namespace %s still there after %s", ns, wait)
}

// Sweep deletes every namespace an earlier run left behind (killed before
// its cleanup).
func (c *Cluster) Sweep(ctx context.Context) ([]string, error) {
	l, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: SuiteLabel + "=" + SuiteLabelValue})
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, ns := range l.Items {
		if err := c.DeleteNamespace(ctx, ns.Name, 3*time.Minute); err != nil {
			return gone, err
		}
		gone = append(gone, ns.Name)
	}
	return gone, nil
}

// PodSpec is what the suite varies between its pods.
type PodSpec struct {
	Name        string
	Node        string // pinned through the scheduler (nodeSelector), so volume binding works
	Image       string
	Annotations map[string]string
	Command     []string
	Volumes     []corev1.Volume
	Mounts      []corev1.VolumeMount
}

// Pod builds the pod. Every pod the suite measures with is built here, so
// both clusters get the same spec: the tools image (never pulled), one
// second of grace, NET_RAW for ping and an unconfined seccomp profile
// (io_uring_setup is refused by runtimes' default profiles).
func (s PodSpec) Pod() *corev1.Pod {
	cmd := s.Command
	if len(cmd) == 0 {
		cmd = []string{"sleep", "infinity"}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Annotations: s.Annotations, Labels: map[string]string{SuiteLabel: SuiteLabelValue}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptrTo[int64](1),
			RestartPolicy:                 corev1.RestartPolicyNever,
			EnableServiceLinks:            ptrTo(false),
			SecurityContext:               &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}},
			Containers: []corev1.Container{{
				Name: "main", Image: s.Image, ImagePullPolicy: corev1.PullNever, Command: cmd,
				SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW"}}},
				VolumeMounts:    s.Mounts,
			}},
			Volumes: s.Volumes,
		},
	}
	if s.Node != "" {
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": s.Node}
	}
	return p
}

// RunPods creates the pods and waits until each is Running with its
// container ready. It returns every pod that got there and, per pod that
// did not, why (its last state and the namespace's warning events for it).
func (c *Cluster) RunPods(ctx context.Context, ns string, pods []*corev1.Pod, timeout time.Duration) (map[string]*corev1.Pod, map[string]error) {
	ready := map[string]*corev1.Pod{}
	failed := map[string]error{}
	for _, p := range pods {
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			failed[p.Name] = fmt.Errorf("create: %w", err)
		}
	}
	deadline := time.Now().Add(timeout)
	last := map[string]*corev1.Pod{}
	for len(ready)+len(failed) < len(pods) {
		l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range l.Items {
				p := &l.Items[i]
				if _, done := ready[p.Name]; done {
					continue
				}
				if _, done := failed[p.Name]; done {
					continue
				}
				last[p.Name] = p
				switch {
				case PodReady(p):
					ready[p.Name] = p
				case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
					failed[p.Name] = fmt.Errorf("pod ended: %s", podState(p))
				}
			}
		}
		if len(ready)+len(failed) == len(pods) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			for _, p := range pods {
				if _, ok := ready[p.Name]; ok {
					continue
				}
				if _, ok := failed[p.Name]; ok {
					continue
				}
				state := "never listed"
				if lp := last[p.Name]; lp != nil {
					state = podState(lp)
				}
				failed[p.Name] = fmt.Errorf("not ready after %s: %s%s", timeout, state, c.warnings(ns, p.Name))
			}
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return ready, failed
}

// PodReady: Running with the Ready condition true.
func PodReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
	s := "phase " + string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf(", %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(", %s terminated: %s exit %d %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message)
		}
	}
	return s
}

// warnings are the last few warning events of a pod, for error messages
// (a sandbox that failed names the CNI error there).
func (c *Cluster) warnings(ns, pod string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return ""
	}
	var msgs []string
	for _, e := range evs.Items {
		if e.Type == corev1.EventTypeWarning {
			msgs = append(msgs, e.Reason+": "+e.Message)
		}
	}
	if len(msgs) > 3 {
		msgs = msgs[len(msgs)-3:]
	}
	if len(msgs) == 0 {
		return ""
	}
	return "; events: " + strings.Join(msgs, " | ")
}

// ErrExit is an Exec whose command ran and exited non-zero.
var ErrExit = errors.New("command exited non-zero")

// Exec runs cmd in the pod's container through the API server (kubelet →
// the node's CRI streaming server) and returns stdout and stderr. A
// command that ran and failed returns an error wrapping ErrExit, with its
// output.
func (c *Cluster) Exec(ctx context.Context, ns, pod string, timeout time.Duration, cmd ...string) (string, string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = ex.StreamWithContext(cctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		var ce interface{ ExitStatus() int }
		if errors.As(err, &ce) {
			err = fmt.Errorf("%w (%d): %s", ErrExit, ce.ExitStatus(), lastLine(errb.String()))
		} else if cctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("exec %s: timed out after %s", strings.Join(cmd, " "), timeout)
		}
	}
	return out.String(), errb.String(), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

func ptrTo[T any](v T) *T { return &v }
