// Package e2e runs berth's end-to-end suites against a running kind
// cluster (`make up`, context kind-berth). They are skipped unless
// BERTH_E2E=1, so `make test` never needs a cluster; `make e2e` sets it.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// BusyboxImage is preloaded in berth's kind node image under its usual name.
const BusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

// Cluster is the cluster under test.
type Cluster struct {
	Config *rest.Config
	Client kubernetes.Interface
}

// Connect skips the test unless BERTH_E2E=1, and connects to the kubectl
// context BERTH_E2E_CONTEXT (default kind-berth).
func Connect(t *testing.T) *Cluster {
	t.Helper()
	if os.Getenv("BERTH_E2E") == "" {
		t.Skip("end-to-end test: run `make up` then `make e2e` (BERTH_E2E=1)")
	}
	ctxName := os.Getenv("BERTH_E2E_CONTEXT")
	if ctxName == "" {
		ctxName = "kind-berth"
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: ctxName}).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig context %s: %v", ctxName, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Client: cs}
}

// Namespace creates a namespace for one test and deletes it afterwards.
func (c *Cluster) Namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("e2e-%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), time.Now().UnixNano()%100000)
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = strings.TrimLeft(name, "-")
	}
	_, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Schedulable returns the names of the nodes pods can run on.
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
	return out
}

// BusyboxPod is a pod that sleeps, pinned to node when given.
func BusyboxPod(name, node string, args ...string) *corev1.Pod {
	if len(args) == 0 {
		args = []string{"sleep", "3600"}
	}
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent, Command: args,
			}},
		},
	}
}

// RunPod creates a pod and waits until it runs (or, for pods that end,
// until it ends), returning its latest state.
func (c *Cluster) RunPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	return c.WaitPod(t, ns, pod.Name, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
}

// WaitPod polls a pod until cond holds, for up to three minutes.
func (c *Cluster) WaitPod(t *testing.T, ns, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		state := "never seen"
		if last != nil {
			state = fmt.Sprintf("phase %s, conditions %v, containers %v", last.Status.Phase, last.Status.Conditions, last.Status.ContainerStatuses)
		}
		c.dumpEvents(t, ns)
		t.Fatalf("pod %s/%s: %v (%s)", ns, name, err, state)
	}
	return last
}

func (c *Cluster) dumpEvents(t *testing.T, ns string) {
	evs, err := c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, e := range evs.Items {
		t.Logf("event %s %s: %s %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
}

// Exec runs a command in a pod's first container through the API server
// (kubelet → CRI streaming) and returns stdout, stderr and the error.
func (c *Cluster) Exec(ns, pod string, cmd ...string) (string, string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}

// Kubectl runs kubectl against the test's context.
func Kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctxName := os.Getenv("BERTH_E2E_CONTEXT")
	if ctxName == "" {
		ctxName = "kind-berth"
	}
	out, err := exec.Command("kubectl", append([]string{"--context", ctxName}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}
