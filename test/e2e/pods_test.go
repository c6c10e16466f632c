package e2e

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodLifecycle: a pod runs, answers exec, writes logs, and is gone
// after delete.
func TestPodLifecycle(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	c.RunPod(t, ns, BusyboxPod("life", "", "sh", "-c", "echo started; exec sleep 3600"))
	out, _, err := c.Exec(ns, "life", "sh", "-c", "echo exec-$((6*7))")
	if err != nil || strings.TrimSpace(out) != "exec-42" {
		t.Fatalf("exec = %q, %v", out, err)
	}
	if _, _, err := c.Exec(ns, "life", "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "3") {
		t.Errorf("exec exit 3: %v, want an error with the exit code", err)
	}
	logs, err := c.Client.CoreV1().Pods(ns).GetLogs("life", &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil || !strings.Contains(string(logs), "started") {
		t.Errorf("logs = %q, %v", logs, err)
	}
}

// TestOOMKilled: a container over its memory limit ends OOMKilled.
func TestOOMKilled(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	pod := BusyboxPod("oom", "", "sh", "-c", "x=a; while true; do x=$x$x; done")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	if _, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := c.WaitPod(t, ns, "oom", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.Reason != "OOMKilled" {
		t.Errorf("terminated state = %+v, want reason OOMKilled", term)
	}
}
