package e2e

import (
	"strings"
	"testing"
)

// TestPodToPod: pods reach each other on the same node and across nodes,
// over the default (vxlan) network.
func TestPodToPod(t *testing.T) {
	c := Connect(t)
	nodes := c.Schedulable(t)
	if len(nodes) < 2 {
		t.Skipf("needs two schedulable nodes, have %v", nodes)
	}
	ns := c.Namespace(t, nil)
	server := c.RunPod(t, ns, BusyboxPod("server", nodes[0], "sh", "-c", "while true; do echo pong | nc -l -p 8080; done"))
	c.RunPod(t, ns, BusyboxPod("same", nodes[0]))
	c.RunPod(t, ns, BusyboxPod("cross", nodes[1]))
	for _, client := range []string{"same", "cross"} {
		out, _, err := c.Exec(ns, client, "sh", "-c", "echo ping | nc -w 5 "+server.Status.PodIP+" 8080")
		if err != nil || !strings.Contains(out, "pong") {
			t.Errorf("%s → server %s: %q, %v", client, server.Status.PodIP, out, err)
		}
	}
}

// TestDNS: CoreDNS answers for the API server's Service.
func TestDNS(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	c.RunPod(t, ns, BusyboxPod("dns", ""))
	out, _, err := c.Exec(ns, "dns", "nslookup", "kubernetes.default.svc.cluster.local")
	if err != nil || !strings.Contains(out, "Address") {
		t.Errorf("nslookup: %q, %v", out, err)
	}
}
