package kindperf

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/berthdev/berth/test/perf/csifio"
	"github.com/berthdev/berth/test/perf/perfnet"
)

// Annotations the suite sets on pods.
const (
	NetworkAnnotation = "berth.dev/network"
	EgressAnnotation  = "kubernetes.io/egress-bandwidth"
	MacvlanNetwork    = "berth-macvlan"
	iperfPort         = 5201
)

// Run is one measurement run against both clusters. It fills R; every
// failure of a case is recorded in the report, not returned.
type Run struct {
	R          *Report
	Berth, Ref *Cluster
	Image      string // the tools image
	Logf       func(format string, a ...any)
	// DropCaches syncs and drops the host's page cache (the kind nodes
	// share its kernel) before every fio run.
	DropCaches func() error
	order      int
	// namespaces to delete at the end, per cluster.
	mu  sync.Mutex
	nss []nsRef
}

type nsRef struct {
	c  *Cluster
	ns string
}

func (r *Run) cluster(role string) *Cluster {
	if role == Berth {
		return r.Berth
	}
	return r.Ref
}

func (r *Run) note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.R.Notes = append(r.R.Notes, msg)
	r.Logf("note: %s", msg)
}

func (r *Run) namespace(ctx context.Context, c *Cluster, what string) (string, error) {
	ns, err := c.Namespace(ctx, what)
	if err != nil {
		return "", fmt.Errorf("%s: create namespace: %w", c.Context, err)
	}
	r.mu.Lock()
	r.nss = append(r.nss, nsRef{c, ns})
	r.mu.Unlock()
	return ns, nil
}

// Cleanup deletes every namespace the run created, with its own context:
// it runs after an interrupt too.
func (r *Run) Cleanup() []error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	r.mu.Lock()
	nss := r.nss
	r.nss = nil
	r.mu.Unlock()
	for _, n := range nss {
		if err := n.c.DeleteNamespace(ctx, n.ns, 3*time.Minute); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.c.Context, err))
		}
	}
	return errs
}

func (r *Run) deleteNamespace(ctx context.Context, c *Cluster, ns string) {
	if err := c.DeleteNamespace(ctx, ns, 3*time.Minute); err != nil {
		r.Logf("%s: delete %s: %v", c.Context, ns, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, n := range r.nss {
		if n.c == c && n.ns == ns {
			r.nss = append(r.nss[:i], r.nss[i+1:]...)
			break
		}
	}
}

// endpoint is a running pod the suite execs into.
type endpoint struct {
	c    *Cluster
	ns   string
	pod  string
	node string
	ip   string
}

func (e endpoint) String() string { return fmt.Sprintf("%s@%s (%s)", e.pod, e.node, e.ip) }

func (e endpoint) exec(ctx context.Context, timeout time.Duration, cmd ...string) (string, string, error) {
	return e.c.Exec(ctx, e.ns, e.pod, timeout, cmd...)
}

func endpointOf(c *Cluster, ns string, p *corev1.Pod) endpoint {
	return endpoint{c: c, ns: ns, pod: p.Name, node: p.Spec.NodeName, ip: p.Status.PodIP}
}

// ---- network: throughput and shaped pods -----------------------------------

// netPods are the pods of the two network parts.
type netPods struct {
	server  map[string]endpoint            // by network
	client  map[string]map[string]endpoint // network → placement
	shaped  map[string]map[string]endpoint // cluster → rate
	skipped map[string]string              // network or "shaped "+cluster → why
}

func podName(parts ...string) string {
	return strings.ToLower(strings.Join(parts, "-"))
}

// setupNet creates every pod of the selected network parts in both
// clusters and waits until they run. The iperf3 server of a network sits
// on the first worker; the same-node client beside it, the cross-node and
// the shaped clients on the second worker.
func (r *Run) setupNet(ctx context.Context) (*netPods, error) {
	p := r.R.Params
	np := &netPods{server: map[string]endpoint{}, client: map[string]map[string]endpoint{},
		shaped: map[string]map[string]endpoint{}, skipped: map[string]string{}}
	type netDef struct {
		net     string
		role    string
		network string // berth.dev/network, "" for the default
	}
	nets := []netDef{{NetRef, Ref, ""}, {NetBerthVXLAN, Berth, ""}}
	if p.Has(PartNet) {
		// berth's macvlan network is optional: skip it, and say why, when
		// the workers have no such conflist.
		missing := ""
		for _, node := range r.Berth.Workers[:2] {
			names, err := NodeNetworks(ctx, node)
			if err != nil {
				missing = err.Error()
				break
			}
			if !contains(names, MacvlanNetwork) {
				missing = fmt.Sprintf("node %s has no CNI network named %q in /etc/cni/net.d (it has %v); the pod annotation %s: %s needs it",
					node, MacvlanNetwork, names, NetworkAnnotation, MacvlanNetwork)
				break
			}
		}
		if missing == "" {
			nets = append(nets, netDef{NetBerthMacvlan, Berth, MacvlanNetwork})
		} else {
			np.skipped[NetBerthMacvlan] = missing
			r.note("%s skipped: %s.", NetBerthMacvlan, missing)
		}
	}
	type clusterPods struct {
		ns    string
		specs []*corev1.Pod
		// what each pod is: network and role ("server", placement, or
		// "shaped <rate>").
		what map[string][2]string
	}
	per := map[string]*clusterPods{}
	for _, role := range []string{Ref, Berth} {
		c := r.cluster(role)
		ns, err := r.namespace(ctx, c, "net")
		if err != nil {
			return nil, err
		}
		per[role] = &clusterPods{ns: ns, what: map[string][2]string{}}
	}
	add := func(role, name, node, net, what string, ann map[string]string, cmd []string) {
		cp := per[role]
		cp.specs = append(cp.specs, PodSpec{Name: name, Node: node, Image: r.Image, Annotations: ann, Command: cmd}.Pod())
		cp.what[name] = [2]string{net, what}
	}
	for _, n := range nets {
		c := r.cluster(n.role)
		w0, w1 := c.Workers[0], c.Workers[1]
		var ann map[string]string
		if n.network != "" {
			ann = map[string]string{NetworkAnnotation: n.network}
		}
		// -J: a JSON server hands its own intervals to a client that asks
		// with --get-server-output (a text server hands over text).
		add(n.role, podName(n.net, "server"), w0, n.net, "server", ann,
			[]string{"iperf3", "-s", "-J", "-p", strconv.Itoa(iperfPort)})
		if p.Has(PartNet) {
			add(n.role, podName(n.net, "same"), w0, n.net, SameNode, ann, nil)
			add(n.role, podName(n.net, "cross"), w1, n.net, CrossNode, ann, nil)
		}
		if p.Has(PartShaped) && n.network == "" {
			for _, rate := range p.ShapedRates {
				add(n.role, podName(n.net, "shaped", rate), w1, n.net, "shaped "+rate,
					map[string]string{EgressAnnotation: rate}, nil)
			}
		}
	}
	var wg sync.WaitGroup
	type result struct {
		ready  map[string]*corev1.Pod
		failed map[string]error
	}
	results := map[string]*result{}
	var mu sync.Mutex
	for role, cp := range per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready, failed := r.cluster(role).RunPods(ctx, cp.ns, cp.specs, 4*time.Minute)
			mu.Lock()
			results[role] = &result{ready, failed}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for role, cp := range per {
		c := r.cluster(role)
		res := results[role]
		names := make([]string, 0, len(cp.what))
		for name := range cp.what {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			w := cp.what[name]
			net, what := w[0], w[1]
			if err, bad := res.failed[name]; bad {
				key := net
				if strings.HasPrefix(what, "shaped ") {
					key = "shaped " + role
				}
				if np.skipped[key] == "" {
					np.skipped[key] = fmt.Sprintf("pod %s (%s) did not start: %v", name, c.Context, err)
					r.note("%s skipped: %s.", key, np.skipped[key])
				}
				continue
			}
			ep := endpointOf(c, cp.ns, res.ready[name])
			switch {
			case what == "server":
				np.server[net] = ep
			case strings.HasPrefix(what, "shaped "):
				if np.shaped[role] == nil {
					np.shaped[role] = map[string]endpoint{}
				}
				np.shaped[role][strings.TrimPrefix(what, "shaped ")] = ep
			default:
				if np.client[net] == nil {
					np.client[net] = map[string]endpoint{}
				}
				np.client[net][what] = ep
			}
			r.Logf("%s: %s %s", c.Context, what, ep)
		}
	}
	for _, n := range nets {
		if _, ok := np.server[n.net]; !ok && np.skipped[n.net] == "" {
			np.skipped[n.net] = "its iperf3 server did not start"
		}
	}
	return np, nil
}

// Network runs the throughput matrix and the shaped cases, interleaved:
// every repeat runs each case once, the order rotating from repeat to
// repeat.
func (r *Run) Network(ctx context.Context) error {
	p := r.R.Params
	np, err := r.setupNet(ctx)
	if err != nil {
		return err
	}
	if ep, ok := np.server[NetBerthVXLAN]; ok {
		r.toolVersions(ctx, ep)
	}
	// The pods' MTU differs between networks (VXLAN's overhead, the kind
	// bridge's setting) and explains part of the throughput.
	r.R.MTU = map[string]int{}
	for net, ep := range np.server {
		if out, _, err := ep.exec(ctx, 30*time.Second, "cat", "/sys/class/net/eth0/mtu"); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(out)); err == nil {
				r.R.MTU[net] = n
			}
		}
	}
	type job struct {
		name string
		run  func(rep int)
	}
	var jobs []job
	if p.Has(PartNet) {
		for _, net := range NetNames {
			role := Berth
			if net == NetRef {
				role = Ref
			}
			for _, pl := range Placements {
				for _, st := range p.Streams {
					c := &NetCase{Net: net, Cluster: role, Placement: pl, Streams: st}
					r.R.Throughput = append(r.R.Throughput, c)
					srv, sok := np.server[net]
					cli, cok := np.client[net][pl]
					switch {
					case np.skipped[net] != "":
						c.Skipped = np.skipped[net]
						continue
					case !sok || !cok:
						c.Skipped = "its client pod did not start"
						continue
					}
					c.Server, c.Client = srv.String(), cli.String()
					jobs = append(jobs, job{fmt.Sprintf("%s %s", net, c.Key()), func(rep int) {
						s := r.throughputSample(ctx, cli, srv.ip, st)
						s.Repeat = rep
						c.Samples = append(c.Samples, s)
					}})
				}
			}
		}
	}
	if p.Has(PartShaped) {
		for _, rate := range p.ShapedRates {
			mbps, err := RateMbps(rate)
			if err != nil {
				return err
			}
			for _, st := range p.ShapedStreams {
				for _, role := range []string{Ref, Berth} {
					net := NetRef
					if role == Berth {
						net = NetBerthVXLAN
					}
					c := &ShapedCase{Cluster: role, Rate: rate, RateMbps: mbps, Streams: st, Annotation: EgressAnnotation + ": " + rate}
					r.R.Shaped = append(r.R.Shaped, c)
					srv, sok := np.server[net]
					cli, cok := np.shaped[role][rate]
					switch {
					case np.skipped["shaped "+role] != "":
						c.Skipped = np.skipped["shaped "+role]
						continue
					case np.skipped[net] != "":
						c.Skipped = np.skipped[net]
						continue
					case !sok || !cok:
						c.Skipped = "its pods did not start"
						continue
					}
					c.Server, c.Client = srv.String(), cli.String()
					jobs = append(jobs, job{fmt.Sprintf("shaped %s %s", role, c.Key()), func(rep int) {
						s := r.shapedSample(ctx, cli, srv.ip, st)
						s.Repeat = rep
						c.Samples = append(c.Samples, s)
					}})
				}
			}
		}
	}
	for rep := 0; rep < p.Repeats; rep++ {
		for i := range jobs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			j := jobs[(i+rep)%len(jobs)]
			r.Logf("network %d/%d: %s", rep+1, p.Repeats, j.name)
			j.run(rep)
		}
	}
	return nil
}

// iperf runs one iperf3 client in the client pod, retrying connection
// errors (a server that is still starting, or busy with the tail of the
// previous run).
func (r *Run) iperf(ctx context.Context, cli endpoint, serverIP string, streams int, extra ...string) ([]byte, error) {
	secs := r.R.Params.IperfSeconds
	args := append(perfnet.IperfClient{Iperf3: "iperf3", ServerIP: serverIP, Port: iperfPort, Streams: streams,
		Duration: time.Duration(secs) * time.Second}.Args(), extra...)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		out, _, err := cli.exec(ctx, time.Duration(secs)*time.Second+time.Minute, args...)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		_, perr := perfnet.DecodeIperf([]byte(out))
		if perr == nil {
			return []byte(out), nil
		}
		if err != nil && strings.TrimSpace(out) == "" {
			perr = err
		}
		lastErr = perr
		if !perfnet.Retryable(perr) {
			break
		}
	}
	return nil, lastErr
}

func (r *Run) throughputSample(ctx context.Context, cli endpoint, serverIP string, streams int) IperfSample {
	r.order++
	out, err := r.iperf(ctx, cli, serverIP, streams)
	if err != nil {
		return IperfSample{Order: r.order, Error: err.Error()}
	}
	s, err := perfnet.ParseIperf(out)
	if err != nil {
		return IperfSample{Order: r.order, Error: err.Error()}
	}
	s.Order = r.order
	return s
}

// shapedSample: idle pings, then iperf3 from the shaped pod with pings
// beside it, from one second in to one second before the end, so TCP's
// start and the teardown stay out of the RTT figures.
func (r *Run) shapedSample(ctx context.Context, cli endpoint, serverIP string, streams int) ShapedSample {
	p := r.R.Params
	r.order++
	s := ShapedSample{Order: r.order}
	interval := strconv.FormatFloat(float64(p.PingIntervalMs)/1000, 'f', -1, 64)
	if p.IdlePings > 0 {
		out, _, _ := cli.exec(ctx, time.Minute, "ping", "-n", "-c", strconv.Itoa(p.IdlePings), "-i", interval, "-w", "10", serverIP)
		s.IdleRTTms = ParsePing(out).RTTms
	}
	pingSecs := max(p.IperfSeconds-2, 1)
	var ping PingResult
	var pingErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		out, _, err := cli.exec(ctx, time.Duration(pingSecs)*time.Second+time.Minute,
			"ping", "-n", "-i", interval, "-w", strconv.Itoa(pingSecs), serverIP)
		ping = ParsePing(out)
		// ping exits 1 when an echo went unanswered: that is loss, not a
		// failure of the run.
		if err != nil && !errors.Is(err, ErrExit) {
			pingErr = err
		}
	}()
	// --get-server-output: the receiver's own intervals, for the rate
	// after the shaper's burst allowance is spent.
	out, err := r.iperf(ctx, cli, serverIP, streams, "--get-server-output")
	wg.Wait()
	if err != nil {
		s.Error = err.Error()
		return s
	}
	is, err := perfnet.ParseIperf(out)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	if pingErr != nil {
		s.Error = "ping: " + pingErr.Error()
		return s
	}
	s.Mbps, s.Retransmits = is.Gbps*1000, is.Retransmits
	if late, err := LateMbps(out, float64(p.IperfSeconds)/2); err == nil {
		s.LateMbps = &late
	}
	s.RTTms, s.PingSent, s.PingLost = ping.RTTms, ping.Sent, ping.Sent-ping.Received
	return s
}

// toolVersions records the versions of the tools inside the image.
func (r *Run) toolVersions(ctx context.Context, ep endpoint) {
	if r.R.Env.Iperf3 != "" {
		return
	}
	first := func(cmd ...string) string {
		out, _, _ := ep.exec(ctx, 30*time.Second, cmd...)
		return perfnet.FirstLine(out)
	}
	r.R.Env.Iperf3 = first("iperf3", "--version")
	r.R.Env.Fio = first("fio", "--version")
	r.R.Env.Ping = first("ping", "-V")
}

// ---- fio -------------------------------------------------------------------

// Fio runs the CSI suite's job set in one pod on the first worker of the
// berth cluster, on a berth-csi PVC and on a hostPath volume.
func (r *Run) Fio(ctx context.Context) error {
	p := r.R.Params
	c := r.Berth
	node := c.Workers[0]
	f := &FioPart{Node: node, IOEngine: p.Fio.IOEngine, Jobs: csifio.Jobs(), Targets: []FioTarget{
		{Name: FioHostPath, Path: "/mnt/hostpath", Description: fmt.Sprintf("hostPath `%s` (DirectoryOrCreate) on %s: a directory of the node's own filesystem, the in-cluster native case.", HostPathDir, node)},
		{Name: FioBerth, Path: "/mnt/berth-csi", Description: fmt.Sprintf("a %s PVC of StorageClass `%s` (berth-csi: a FUSE mount with quota; passthrough for read-only opens, direct I/O for writers), provisioned and mounted by the cluster's own sidecars and kubelet.", bytesLabel(p.PVCBytes), p.StorageClass)},
	}}
	r.R.Fio = f
	ns, err := r.namespace(ctx, c, "fio")
	if err != nil {
		return err
	}
	defer r.deleteNamespace(context.Background(), c, ns)
	sc := p.StorageClass
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "bperf-fio", Labels: map[string]string{SuiteLabel: SuiteLabelValue}},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &sc,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(p.PVCBytes, resource.BinarySI)}},
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		f.Skipped = "create PVC: " + err.Error()
		r.note("fio skipped: %s", f.Skipped)
		return nil
	}
	hp := corev1.HostPathDirectoryOrCreate
	pod := PodSpec{Name: "fio", Node: node, Image: r.Image,
		Volumes: []corev1.Volume{
			{Name: "csi", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: HostPathDir, Type: &hp}}},
		},
		Mounts: []corev1.VolumeMount{{Name: "csi", MountPath: "/mnt/berth-csi"}, {Name: "host", MountPath: "/mnt/hostpath"}},
	}.Pod()
	ready, failed := c.RunPods(ctx, ns, []*corev1.Pod{pod}, 5*time.Minute)
	if err := failed["fio"]; err != nil {
		f.Skipped = "the fio pod did not start: " + err.Error()
		r.note("fio skipped: %s", f.Skipped)
		return nil
	}
	ep := endpointOf(c, ns, ready["fio"])
	r.toolVersions(ctx, ep)
	// The hostPath directory outlives the pod: empty it now and remove it
	// from the node at the end.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ep.exec(cctx, time.Minute, "sh", "-c", "rm -f /mnt/hostpath/bperf-* /mnt/berth-csi/bperf-*")
		exec.CommandContext(cctx, "docker", "exec", node, "rm", "-rf", HostPathDir).Run()
	}()
	ep.exec(ctx, time.Minute, "sh", "-c", "rm -f /mnt/hostpath/bperf-* /mnt/berth-csi/bperf-*")
	// Where each target's bytes land on the node: the hostPath directory,
	// and berth-csi's --root (its backing store), read from its DaemonSet.
	f.Backing = map[string]string{FioHostPath: HostPathDir + ": " + nodeFS(ctx, node, HostPathDir)}
	if root := csiRoot(ctx, c); root != "" {
		f.Backing[FioBerth] = root + ": " + nodeFS(ctx, node, root)
	}
	if out, _, err := ep.exec(ctx, 30*time.Second, "cat", "/proc/self/mountinfo"); err == nil {
		for i := range f.Targets {
			f.Targets[i].Mount = mountLine(out, f.Targets[i].Path)
		}
	}

	// io_uring is the CSI suite's engine; a kernel or runtime that refuses
	// it gets libaio, said in the report.
	if f.IOEngine == "io_uring" {
		probe := []string{"fio", "--name=probe", "--filename=/mnt/hostpath/bperf-probe", "--size=1M", "--rw=randread",
			"--bs=4k", "--ioengine=io_uring", "--direct=1", "--runtime=1", "--output-format=json"}
		if _, _, err := ep.exec(ctx, time.Minute, probe...); err != nil {
			f.IOEngine = "libaio"
			r.note("fio: io_uring failed in the pod (%v); every job ran with libaio instead.", err)
		}
		ep.exec(ctx, time.Minute, "rm", "-f", "/mnt/hostpath/bperf-probe")
	}
	fp := p.Fio
	fp.IOEngine = f.IOEngine
	file := func(t FioTarget) string { return t.Path + "/bperf-fio.dat" }
	size := func(t FioTarget) int64 {
		out, _, err := ep.exec(ctx, 30*time.Second, "stat", "-c", "%s", file(t))
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		return n
	}
	runTimeout := time.Duration(fp.RuntimeSeconds)*time.Second + 10*time.Minute
	for rep := 0; rep < fp.Repeats; rep++ {
		for ji, j := range f.Jobs {
			order := []FioTarget{f.Targets[0], f.Targets[1]}
			if (rep+ji)%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, t := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				smp := FioSample{Job: j.ID, Target: t.Name, Repeat: rep}
				if j.Reads() && size(t) < fp.FileBytes {
					r.Logf("fio: lay out %s", file(t))
					if _, _, err := ep.exec(ctx, runTimeout, append([]string{"fio"}, csifio.LayoutArgs(fp, file(t))...)...); err != nil {
						smp.Error = "layout: " + err.Error()
						f.Samples = append(f.Samples, smp)
						continue
					}
				}
				if err := r.DropCaches(); err != nil {
					r.note("fio: dropping the page cache failed (%v): buffered runs may start warm.", err)
					r.DropCaches = func() error { return nil }
				}
				r.Logf("fio %d/%d: %s on %s", rep+1, fp.Repeats, j.ID, t.Name)
				out, _, err := ep.exec(ctx, runTimeout, append([]string{"fio"}, csifio.FioArgs(j, fp, file(t))...)...)
				res, _, perr := csifio.ParseFio([]byte(out), !j.Reads())
				switch {
				case perr == nil:
					smp.FioResult = res
				case err != nil:
					smp.Error = err.Error()
				default:
					smp.Error = perr.Error()
				}
				f.Samples = append(f.Samples, smp)
			}
		}
	}
	return nil
}

// nodeFS is the filesystem holding path on a kind node (findmnt in the
// node's container): source, type.
func nodeFS(ctx context.Context, node, path string) string {
	out, err := exec.CommandContext(ctx, "docker", "exec", node, "findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", path).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// csiRoot is the --root of berth-csi's node plugin (berth-system/berth-csi-node).
func csiRoot(ctx context.Context, c *Cluster) string {
	ds, err := c.Client.AppsV1().DaemonSets("berth-system").Get(ctx, "berth-csi-node", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	for _, ct := range ds.Spec.Template.Spec.Containers {
		for _, a := range ct.Args {
			if v, ok := strings.CutPrefix(a, "--root="); ok {
				return v
			}
		}
	}
	return ""
}

// mountLine is the mountinfo line of the mount point, shortened to its
// mount point, options, type and source.
func mountLine(mountinfo, point string) string {
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != point {
			continue
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) {
				return fmt.Sprintf("%s %s %s %s", f[4], f[i+1], f[i+2], f[5])
			}
		}
	}
	return ""
}

// ---- pod start ---------------------------------------------------------------

// readyWatch records, for every pod of a namespace, when a watch event
// first showed it Ready.
type readyWatch struct {
	mu      sync.Mutex
	ready   map[string]time.Time
	node    map[string]string
	changed chan struct{} // closed (and replaced) on every new Ready pod
}

func watchReady(ctx context.Context, c *Cluster, ns string) *readyWatch {
	w := &readyWatch{ready: map[string]time.Time{}, node: map[string]string{}, changed: make(chan struct{})}
	go func() {
		for ctx.Err() == nil {
			l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for i := range l.Items {
				w.saw(&l.Items[i])
			}
			wi, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				if ev.Type == watch.Error {
					break
				}
				if p, ok := ev.Object.(*corev1.Pod); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
					w.saw(p)
				}
			}
			wi.Stop()
		}
	}()
	return w
}

func (w *readyWatch) saw(p *corev1.Pod) {
	if !PodReady(p) {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.ready[p.Name]; ok {
		return
	}
	w.ready[p.Name] = now
	w.node[p.Name] = p.Spec.NodeName
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *readyWatch) wait(ctx context.Context, name string, timeout time.Duration) (time.Time, string, error) {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		t, ok := w.ready[name]
		node := w.node[name]
		ch := w.changed
		w.mu.Unlock()
		if ok {
			return t, node, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, "", ctx.Err()
		case <-deadline:
			return time.Time{}, "", fmt.Errorf("not Ready after %s", timeout)
		}
	}
}

// startPod is the pod of the pod start measurement: busybox sleeping,
// preloaded in both node images, left to the scheduler.
func startPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{SuiteLabel: SuiteLabelValue}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptrTo[int64](1),
			EnableServiceLinks:            ptrTo(false),
			Containers: []corev1.Container{{Name: "main", Image: BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sleep", "3600"}}},
		},
	}
}

type startSide struct {
	c   *Cluster
	ns  string
	w   *readyWatch
	set map[string]*PodStartSet
}

// PodStart measures create → Ready for Pods pods per cluster, first one
// at a time (the clusters alternating pod by pod), then in a burst per
// cluster.
func (r *Run) PodStart(ctx context.Context) error {
	p := r.R.Params
	const timeout = 3 * time.Minute
	sides := map[string]*startSide{}
	for _, role := range []string{Ref, Berth} {
		c := r.cluster(role)
		ns, err := r.namespace(ctx, c, "start")
		if err != nil {
			return err
		}
		defer r.deleteNamespace(context.Background(), c, ns)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s := &startSide{c: c, ns: ns, w: watchReady(wctx, c, ns), set: map[string]*PodStartSet{}}
		for _, mode := range []string{StartSequential, StartBurst} {
			set := &PodStartSet{Cluster: role, Mode: mode, Pods: p.Pods}
			s.set[mode] = set
			r.R.PodStart = append(r.R.PodStart, set)
		}
		sides[role] = s
	}
	order := 0
	one := func(s *startSide, set *PodStartSet, name string) {
		order++
		rec := PodStart{Name: name, Order: order}
		t0 := time.Now()
		if _, err := s.c.Client.CoreV1().Pods(s.ns).Create(ctx, startPod(name), metav1.CreateOptions{}); err != nil {
			rec.Error = "create: " + err.Error()
		} else if t, node, err := s.w.wait(ctx, name, timeout); err != nil {
			rec.Error = err.Error() + s.c.warnings(s.ns, name)
		} else {
			rec.Ms, rec.Node = float64(t.Sub(t0))/1e6, node
		}
		set.Records = append(set.Records, rec)
	}
	for i := 0; i < p.Pods; i++ {
		roles := []string{Ref, Berth}
		if i%2 == 1 {
			roles[0], roles[1] = roles[1], roles[0]
		}
		for _, role := range roles {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s := sides[role]
			one(s, s.set[StartSequential], fmt.Sprintf("seq-%03d", i))
		}
		r.Logf("pod start: sequential %d/%d", i+1, p.Pods)
	}
	for _, role := range []string{Ref, Berth} {
		if err := r.clearPods(ctx, sides[role]); err != nil {
			return err
		}
	}
	for _, role := range []string{Ref, Berth} {
		s := sides[role]
		set := s.set[StartBurst]
		type created struct {
			name string
			t0   time.Time
			err  error
		}
		var cs []created
		first := time.Now()
		for i := 0; i < p.Pods; i++ {
			name := fmt.Sprintf("burst-%03d", i)
			t0 := time.Now()
			_, err := s.c.Client.CoreV1().Pods(s.ns).Create(ctx, startPod(name), metav1.CreateOptions{})
			cs = append(cs, created{name, t0, err})
		}
		var last time.Time
		for _, cr := range cs {
			order++
			rec := PodStart{Name: cr.name, Order: order}
			if cr.err != nil {
				rec.Error = "create: " + cr.err.Error()
			} else if t, node, err := s.w.wait(ctx, cr.name, timeout); err != nil {
				rec.Error = err.Error() + s.c.warnings(s.ns, cr.name)
			} else {
				rec.Ms, rec.Node = float64(t.Sub(cr.t0))/1e6, node
				if t.After(last) {
					last = t
				}
			}
			set.Records = append(set.Records, rec)
		}
		if !last.IsZero() {
			set.WallMs = float64(last.Sub(first)) / 1e6
		}
		r.Logf("pod start: burst of %d in %s: %.0f ms", p.Pods, role, set.WallMs)
		if err := r.clearPods(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// clearPods deletes the namespace's pods and waits until they are gone,
// so a finished phase does not load the nodes during the next.
func (r *Run) clearPods(ctx context.Context, s *startSide) error {
	if err := s.c.Client.CoreV1().Pods(s.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("%s: delete pods: %w", s.c.Context, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		l, err := s.c.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pods of %s still there after 3 minutes", s.c.Context, s.ns)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
