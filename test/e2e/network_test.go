package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// NetworkAnnotation selects a pod's berth network (a conflist's name in
// the node's /etc/cni/net.d) instead of the default one.
const NetworkAnnotation = "berth.dev/network"

// MacvlanNetwork is the second network berth-cni's deploy ships.
const MacvlanNetwork = "berth-macvlan"

// listener answers every TCP connection on 8080 with pong-<pod> and appends
// what the client sent to /tmp/received, so a test can ask the server
// afterwards which clients it saw.
const listener = `while true; do echo pong-$HOSTNAME | nc -l -p 8080 >> /tmp/received; done`

// cniNetworks returns the names of the CNI networks configured on a node.
func cniNetworks(node string) ([]string, error) {
	const sep = "---berth-e2e-file---"
	out, err := NodeExec(node, "sh", "-c", `for f in /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf; do [ -f "$f" ] && cat "$f" && echo `+sep+`; done; true`)
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	var names []string
	for _, f := range strings.Split(out, sep) {
		var conf struct{ Name string }
		if json.Unmarshal([]byte(strings.TrimSpace(f)), &conf) == nil && conf.Name != "" {
			names = append(names, conf.Name)
		}
	}
	return names, nil
}

// requireNetwork skips unless every node has the named CNI network.
func requireNetwork(t *testing.T, network string, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		RequireNodeAccess(t, n)
		names, err := cniNetworks(n)
		if err != nil {
			t.Fatalf("CNI networks on %s: %v", n, err)
		}
		found := false
		for _, name := range names {
			found = found || name == network
		}
		if !found {
			t.Skipf("node %s has no CNI network %q in /etc/cni/net.d (has %v): the cluster was deployed without it", n, network, names)
		}
	}
}

// TestPodToPod: pods reach each other on the same node and across nodes,
// on the default (VXLAN) network and on the macvlan network (pods choose
// it with the berth.dev/network annotation).
func TestPodToPod(t *testing.T) {
	c := Connect(t)
	n0, n1 := c.TwoNodes(t)
	for _, network := range []struct{ name, cni string }{
		{"vxlan", ""},
		{"macvlan", MacvlanNetwork},
	} {
		t.Run(network.name, func(t *testing.T) {
			if network.cni != "" {
				requireNetwork(t, network.cni, n0, n1)
			}
			ns := c.Namespace(t, nil)
			pod := func(name, node string) *corev1.Pod {
				p := Shell(name, node, listener)
				if network.cni != "" {
					p.Annotations = map[string]string{NetworkAnnotation: network.cni}
				}
				return p
			}
			pods := c.RunPods(t, ns, pod("server", n0), pod("same", n0), pod("cross", n1))
			for _, p := range pods {
				t.Logf("%s on %s: %s", p.Name, p.Spec.NodeName, p.Status.PodIP)
			}
			server := pods[0].Status.PodIP
			for _, client := range []string{"same", "cross"} {
				t.Run(client+"-node", func(t *testing.T) {
					var out string
					// The listener may not be bound yet right after start.
					Eventually(t, time.Minute, 2*time.Second, client+" → server "+server, func() (bool, string) {
						o, e, err := c.Exec(ns, client, "sh", "-c", "echo hello-from-"+client+" | nc -w 3 "+server+" 8080")
						out = o
						return strings.Contains(o, "pong-server"), fmt.Sprintf("%q %q %v", o, e, err)
					})
					// And the reverse direction, to the client's own listener.
					Eventually(t, time.Minute, 2*time.Second, "server → "+client, func() (bool, string) {
						o, e, err := c.Exec(ns, "server", "sh", "-c", "echo hello-back | nc -w 3 "+podIP(pods, client)+" 8080")
						return strings.Contains(o, "pong-"+client), fmt.Sprintf("%q %q %v", o, e, err)
					})
					// The server answers as the connection opens and appends
					// what it read once the client closes, so the record can
					// trail the client's exit by a moment.
					Eventually(t, 10*time.Second, time.Second, "server records "+client+"'s message", func() (bool, string) {
						got := c.Sh(t, ns, "server", "cat /tmp/received")
						return strings.Contains(got, "hello-from-"+client), fmt.Sprintf("received %q (client saw %q)", got, out)
					})
				})
			}
		})
	}
}

func podIP(pods []*corev1.Pod, name string) string {
	for _, p := range pods {
		if p.Name == name {
			return p.Status.PodIP
		}
	}
	return ""
}

// TestClusterIPService: a ClusterIP Service with two backends on different
// nodes, reached through kube-proxy from a client pod by ClusterIP, by the
// Service's DNS names; every backend answers.
func TestClusterIPService(t *testing.T) {
	c := Connect(t)
	n0, n1 := c.TwoNodes(t)
	ns := c.Namespace(t, nil)
	ctx := context.Background()
	var pods []*corev1.Pod
	for i, node := range []string{n0, n1} {
		p := Shell(fmt.Sprintf("web-%d", i), node, "mkdir -p /www && echo backend-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www")
		p.Labels["svc"] = "web"
		// Endpoints only list a backend once it listens.
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
			ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
		pods = append(pods, p)
	}
	pods = append(pods, BusyboxPod("client", n0))
	c.RunPods(t, ns, pods...)
	svc, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"svc": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 2*time.Minute, time.Second, "two ready endpoints", func() (bool, string) {
		slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
		}
		return ready == 2, fmt.Sprintf("%d ready", ready)
	})
	t.Logf("Service web: ClusterIP %s", svc.Spec.ClusterIP)
	for _, target := range []struct{ name, host string }{
		{"cluster-ip", svc.Spec.ClusterIP},
		{"dns-fqdn", "web." + ns + ".svc.cluster.local"},
		{"dns-short", "web"},
	} {
		t.Run(target.name, func(t *testing.T) {
			// kube-proxy picks a backend at random per connection: ask
			// until both have answered. (timeout(1), not wget -T: the
			// image's busybox 1.35 wget segfaults with -T.)
			seen := map[string]bool{}
			Eventually(t, 2*time.Minute, time.Second, "both backends through "+target.host, func() (bool, string) {
				out, errOut, err := c.ExecTimeout(2*time.Minute, ns, "client", "sh", "-c",
					"for i in 1 2 3 4 5 6 7 8 9 10; do timeout 10 wget -q -O - http://"+target.host+"/; done")
				for _, l := range strings.Fields(out) {
					seen[l] = true
				}
				return seen["backend-web-0"] && seen["backend-web-1"], fmt.Sprintf("seen %v; %q %v", seen, errOut, err)
			})
		})
	}
}

// TestDNS: CoreDNS answers with the Services' ClusterIPs.
func TestDNS(t *testing.T) {
	c := Connect(t)
	ns := c.Namespace(t, nil)
	c.RunPod(t, ns, BusyboxPod("dns", ""))
	for _, tc := range []struct{ svcNS, svc string }{
		{"default", "kubernetes"},
		{"kube-system", "kube-dns"},
	} {
		t.Run(tc.svc, func(t *testing.T) {
			s, err := c.Client.CoreV1().Services(tc.svcNS).Get(context.Background(), tc.svc, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			name := tc.svc + "." + tc.svcNS + ".svc.cluster.local"
			out, errOut, err := c.Exec(ns, "dns", "nslookup", name)
			// Answers follow the "Name:" line; the server's own address
			// comes before it.
			_, answer, ok := strings.Cut(out, "Name:")
			if err != nil || !ok || !strings.Contains(answer, s.Spec.ClusterIP) {
				t.Errorf("nslookup %s: want %s; got %q %q %v", name, s.Spec.ClusterIP, out, errOut, err)
			}
		})
	}
}

// waitTenantMapping waits until berth-netd on each node has written the
// namespace → tenant mapping berth-cni reads at pod ADD.
func waitTenantMapping(t *testing.T, nodes []string, want map[string]string) {
	t.Helper()
	for _, n := range nodes {
		Eventually(t, time.Minute, time.Second, "tenant mapping on "+n, func() (bool, string) {
			m := map[string]string{}
			if err := NodeJSON(n, "/run/berth/namespace-tenants.json", &m); err != nil {
				return false, err.Error()
			}
			for ns, tenant := range want {
				if m[ns] != tenant {
					return false, fmt.Sprintf("%s → %q, want %q", ns, m[ns], tenant)
				}
			}
			return true, ""
		})
	}
}

var received = regexp.MustCompile(`(\d+) packets received`)

// TestTenantIsolation: namespaces labelled berth.dev/tenant=<t> put their
// pods in tenant t. Pods of one tenant reach each other across nodes; a pod
// of another tenant gets no packet through, on another node or on the same
// one: ping gets zero replies, a TCP connect fails, and the target never
// saw the connection. On the default (VXLAN) network, where per-tenant
// VNIs keep tenants apart, and on macvlan, where berth-netd's berth_remote
// map tells each node the tenants of the other nodes' pods.
func TestTenantIsolation(t *testing.T) {
	c := Connect(t)
	n0, n1 := c.TwoNodes(t)
	RequireNodeAccess(t, n0)
	for _, network := range []struct{ name, cni string }{
		{"vxlan", ""},
		{"macvlan", MacvlanNetwork},
	} {
		t.Run(network.name, func(t *testing.T) {
			if network.cni != "" {
				requireNetwork(t, network.cni, n0, n1)
			}
			tenantIsolation(t, c, n0, n1, network.cni)
		})
	}
}

func tenantIsolation(t *testing.T, c *Cluster, n0, n1, network string) {
	const tenantA, tenantB = "e2e-tenant-a", "e2e-tenant-b"
	nsA := c.NamespaceRole(t, "a", map[string]string{"berth.dev/tenant": tenantA})
	nsB := c.NamespaceRole(t, "b", map[string]string{"berth.dev/tenant": tenantB})
	waitTenantMapping(t, []string{n0, n1}, map[string]string{nsA: tenantA, nsB: tenantB})
	type member struct{ ns, name, node string }
	a0, a1 := member{nsA, "a0", n0}, member{nsA, "a1", n1}
	b0, b1 := member{nsB, "b0", n0}, member{nsB, "b1", n1}
	ips := map[member]string{}
	for _, m := range []member{a0, a1, b0, b1} {
		p := Shell(m.name, m.node, listener)
		if network != "" {
			p.Annotations = map[string]string{NetworkAnnotation: network}
		}
		c.CreatePods(t, m.ns, p)
	}
	for _, m := range []member{a0, a1, b0, b1} {
		p := c.WaitPod(t, m.ns, m.name, running)
		ips[m] = p.Status.PodIP
		t.Logf("%s/%s on %s: %s", m.ns, m.name, m.node, ips[m])
	}
	cases := []struct {
		name     string
		from, to member
		reach    bool
	}{
		// Blocked cases first: nothing has been sent yet, so the targets'
		// /tmp/received shows exactly what got through.
		{"other-tenant-cross-node-b1-to-a0", b1, a0, false},
		{"other-tenant-cross-node-a0-to-b1", a0, b1, false},
		{"other-tenant-same-node-b0-to-a0", b0, a0, false},
		{"same-tenant-cross-node-a1-to-a0", a1, a0, true},
		{"same-tenant-cross-node-a0-to-a1", a0, a1, true},
		{"same-tenant-cross-node-b0-to-b1", b0, b1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := "hello-from-" + tc.from.name + "-" + tc.name
			send := func() (string, string, error) {
				return c.Exec(tc.from.ns, tc.from.name, "sh", "-c", "echo "+token+" | nc -w 3 "+ips[tc.to]+" 8080")
			}
			// TCP first: a ping that gets through would not show in the
			// target's log, the TCP payload does.
			out, _, err := send()
			gotPong := strings.Contains(out, "pong-"+tc.to.name)
			if tc.reach && !gotPong {
				// The listener may not be bound yet: retry before judging.
				Eventually(t, time.Minute, 2*time.Second, "TCP within the tenant", func() (bool, string) {
					o, e, err := send()
					return strings.Contains(o, "pong-"+tc.to.name), fmt.Sprintf("%q %q %v", o, e, err)
				})
			}
			if !tc.reach && (gotPong || err == nil) {
				t.Errorf("TCP across tenants: connect succeeded (out %q, err %v)", out, err)
			}
			pingOut, _, _ := c.ExecTimeout(2*time.Minute, tc.from.ns, tc.from.name, "ping", "-c", "5", "-W", "2", ips[tc.to])
			m := received.FindStringSubmatch(pingOut)
			if m == nil {
				t.Fatalf("ping output without a count: %q", pingOut)
			}
			n, _ := strconv.Atoi(m[1])
			if tc.reach && n == 0 {
				t.Errorf("ping within the tenant: 0 of 5 replies: %q", pingOut)
			}
			if !tc.reach && n != 0 {
				t.Errorf("ping across tenants: %d of 5 replies got through: %q", n, pingOut)
			}
			seen, _, _ := c.Exec(tc.to.ns, tc.to.name, "cat", "/tmp/received")
			if strings.Contains(seen, token) != tc.reach {
				t.Errorf("target %s received %q; want token %s present=%v", tc.to.name, seen, token, tc.reach)
			}
		})
	}
}

// transferRate downloads /www/blob from server's httpd (port 8080) into
// from, timed inside from with /proc/uptime (10 ms resolution), and
// returns bits per second.
func transferRate(t *testing.T, c *Cluster, ns, from, serverIP string, bytes int) float64 {
	t.Helper()
	out := c.Sh(t, ns, from, `a=$(cut -d' ' -f1 /proc/uptime); timeout 120 wget -q -O /tmp/blob http://`+serverIP+`:8080/blob || exit 1; b=$(cut -d' ' -f1 /proc/uptime); echo "$a $b $(wc -c < /tmp/blob)"; rm -f /tmp/blob`)
	f := strings.Fields(out)
	if len(f) != 3 {
		t.Fatalf("transfer: %q", out)
	}
	a, _ := strconv.ParseFloat(f[0], 64)
	b, _ := strconv.ParseFloat(f[1], 64)
	if n, _ := strconv.Atoi(f[2]); n != bytes {
		t.Fatalf("transfer: got %d bytes, want %d", n, bytes)
	}
	secs := b - a
	if secs < 0.05 {
		// Only a few ticks of /proc/uptime (10 ms): the rate is coarse,
		// which only matters for the unshaped pod, judged by a lower bound.
		t.Logf("%s: %d bytes in %.2f s, near /proc/uptime's 10 ms resolution", from, bytes, secs)
		secs = max(secs, 0.01)
	}
	return float64(bytes) * 8 / secs
}

// TestBandwidth: kubernetes.io/egress-bandwidth and ingress-bandwidth on a
// pod limit what it sends and receives: a download from (egress) or into
// (ingress) the shaped pod achieves at most 1.5x the limit, while the same
// transfer with an unshaped pod on the same node is clearly faster. The
// rates are the property under test; the elapsed time is measured in the
// pod, not by the test.
func TestBandwidth(t *testing.T) {
	c := Connect(t)
	n0, n1 := c.TwoNodes(t)
	ns := c.Namespace(t, nil)
	const limit = 10e6 // bit/s
	const size = 5 << 20
	serve := fmt.Sprintf("mkdir -p /www && dd if=/dev/zero of=/www/blob bs=1024 count=%d 2>/dev/null && exec httpd -f -p 8080 -h /www", size/1024)
	shaped := Shell("shaped", n1, serve)
	shaped.Annotations = map[string]string{
		"kubernetes.io/egress-bandwidth":  "10M",
		"kubernetes.io/ingress-bandwidth": "10M",
	}
	var pods []*corev1.Pod
	for _, p := range []*corev1.Pod{shaped, Shell("plain", n1, serve), Shell("peer", n0, serve)} {
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
			ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
		pods = append(pods, p)
	}
	c.CreatePods(t, ns, pods...)
	ip := map[string]string{}
	for _, p := range pods {
		ip[p.Name] = c.WaitPod(t, ns, p.Name, Ready).Status.PodIP
	}
	for _, dir := range []struct {
		name string
		// from downloads from server; shapedName/plainName is the pod under test.
		client, server func(pod string) string
	}{
		{"egress", func(string) string { return "peer" }, func(pod string) string { return pod }},
		{"ingress", func(pod string) string { return pod }, func(string) string { return "peer" }},
	} {
		t.Run(dir.name, func(t *testing.T) {
			rate := func(pod string) float64 {
				r := transferRate(t, c, ns, dir.client(pod), ip[dir.server(pod)], size)
				t.Logf("%s %s: %.1f Mbit/s", dir.name, pod, r/1e6)
				return r
			}
			s := rate("shaped")
			p := rate("plain")
			if s > 1.5*limit {
				t.Errorf("shaped %s: %.1f Mbit/s, want at most %.1f (1.5x the 10M annotation)", dir.name, s/1e6, 1.5*limit/1e6)
			}
			if s < 0.25*limit {
				t.Errorf("shaped %s: %.1f Mbit/s, far below the 10M annotation (want at least %.1f)", dir.name, s/1e6, 0.25*limit/1e6)
			}
			if p < 3*limit {
				t.Errorf("unshaped %s: %.1f Mbit/s, want clearly above the shaped pod's limit (at least %.0f)", dir.name, p/1e6, 3*limit/1e6)
			}
		})
	}
}
