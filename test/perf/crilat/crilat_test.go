package crilat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berthdev/berth/test/crienv"
	"github.com/berthdev/berth/test/perf/perfnet"
)

const (
	busybox    = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	rpcTimeout = 2 * time.Minute
	// maxErrors per runtime kept verbatim in the report; the rest are
	// only counted (as failed pods).
	maxErrors = 10
)

var command = []string{"sleep", "3600"}

// TestCRILatency is the CRI performance suite (hack/perf-cri.sh, make
// perf). It starts both runtimes side by side on their own containerds of
// the same build, on one CNI conflist, and measures:
//
//  1. resident memory: each runtime process before any pod and with
//     RSSPods pods running (one runtime at a time, the other at zero pods);
//  2. sequential: Pods pods started one after the other, alternating the
//     runtimes pod by pod, then stopped + removed the same way;
//  3. parallel: Pods pods through Concurrency workers, one runtime after
//     the other.
//
// Memory comes first, while both processes are fresh: Go runtimes return
// freed heap to the kernel lazily, so after the latency phases' churn the
// "before pods" baseline would no longer be one.
//
// Environment: BERTH_PERF_CRI=1 to run at all; CRI_PERF_QUICK=1 for a smoke
// run; CRI_PERF_PODS, CRI_PERF_CONCURRENCY, CRI_PERF_RSS_PODS override the
// sizes; CRI_PERF_OUT is the output directory (default
// test/perf/results). Only an environment that cannot run fails the test:
// latencies and memory are reported, never asserted.
func TestCRILatency(t *testing.T) {
	if os.Getenv("BERTH_PERF_CRI") == "" {
		t.Skip("set BERTH_PERF_CRI=1 (hack/perf-cri.sh, make perf) to run the CRI performance suite")
	}
	tools := crienv.Require(t)
	params, mode, err := paramsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	outDir := os.Getenv("CRI_PERF_OUT")
	if outDir == "" {
		outDir = filepath.Join(crienv.RepoRoot(t), "test", "perf", "results")
	}
	// ^C or SIGTERM cancels the measurement instead of killing the test
	// binary outright, so the cleanups still stop the daemons and shims
	// and remove every pod (CNI DEL) and the bridge.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	t0 := time.Now()
	rep := &Report{Mode: mode, Params: params, Env: collectEnv(t, tools, t0), Reproduce: reproduce(mode)}
	_, hostsDir := crienv.EnsureRegistry(t)
	// One conflist for both runtimes, so the network is not a difference
	// between them. Its /22 (1022 addresses) holds the 2 x Pods of the
	// interleaved sequential phase; the two runtimes' RSS pods never run at
	// the same time.
	bridge := crienv.NewBridgeNetwork(t)
	rep.Env.Network = fmt.Sprintf("reference bridge + host-local (%s) + portmap + loopback; one conflist shared by both runtimes", bridge.Subnet)

	berth := &Runtime{Name: Berth, Description: "berth-cri built from this tree, on containerd v2.2.9 with its CRI plugins disabled"}
	ref := &Runtime{Name: Reference, Description: "containerd v2.2.9's built-in CRI: same containerd build, runc, registry mirror, sandbox image and CNI conflist"}
	rep.Runtimes = []*Runtime{berth, ref}

	var targets []*target
	// Built in a subtest of its own: a build failure then fails that
	// subtest only, and the reference is still measured and reported with
	// berth-cri marked as not measured (the perf suites' convention).
	var binDir string
	if t.Run("build berth-cri", func(t *testing.T) { binDir = crienv.BuildBerth(t) }) {
		// The harness builds into a fresh temporary directory per test
		// process and leaves it; registered before the daemons start, this
		// runs after their cleanups, once berth-cri has exited.
		t.Cleanup(func() { _ = os.RemoveAll(binDir) })
		ctd := crienv.StartContainerd(t, crienv.ContainerdOptions{})
		b := crienv.StartBerthCRI(t, crienv.BerthCRIOptions{Containerd: ctd, HostsDir: hostsDir,
			CNIConfDir: bridge.ConfDir, CNIBinDirs: bridge.BinDirs})
		targets = append(targets, &target{name: Berth, rt: b.Runtime, img: b.Images, pid: b.Pid(),
			ctdPid: ctd.Pid(), ctdAddr: ctd.Address(), res: berth, logTail: b.LogTail, logDir: t.TempDir(),
			logs: []logSource{berthLog(t, b), fileLog("its containerd", ctd.LogPath())}})
		// The harness runs berth-cri at log_level debug (one line per
		// RPC); containerd runs at info. Said in the report, as it can
		// only cost berth-cri.
		rep.Notes = append(rep.Notes, "berth-cri runs with log_level = \"debug\" (set by the test/crienv harness: one log line per CRI request); containerd runs at \"info\". This can only slow berth-cri down.")
	} else {
		berth.Skipped = "berth-cri does not build from this tree (see the test log)"
	}
	refCtd := crienv.StartContainerd(t, crienv.ContainerdOptions{WithCRI: true, HostsDir: hostsDir,
		CNIConfDir: bridge.ConfDir, CNIBinDirs: bridge.BinDirs})
	conn, err := grpc.NewClient("unix://"+refCtd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	targets = append(targets, &target{name: Reference, rt: cri.NewRuntimeServiceClient(conn), img: cri.NewImageServiceClient(conn),
		pid: refCtd.Pid(), ctdAddr: refCtd.Address(), res: ref, logDir: t.TempDir(),
		logTail: func() string { return tail(refCtd.LogPath(), 4000) },
		logs:    []logSource{fileLog("containerd", refCtd.LogPath())}})

	// Setup, untimed: versions, fresh RSS, images.
	for _, tg := range targets {
		v, err := waitVersion(ctx, tg.rt)
		if err != nil {
			t.Fatalf("%s does not answer Version: %v\n%s", tg.name, err, tg.logTail())
		}
		tg.res.Version = v
		tg.res.Memory = &Memory{Pods: params.RSSPods, Process: tg.name}
		if tg.name == Reference {
			tg.res.Memory.Process = "containerd (with its CRI)"
		} else {
			tg.res.Memory.Containerd = &ProcMem{}
		}
		tg.res.Memory.Fresh = tg.mustRead(t, tg.pid)
		if tg.ctdPid != 0 {
			tg.res.Memory.Containerd.Fresh = tg.mustRead(t, tg.ctdPid)
		}
		for _, img := range []string{busybox, crienv.SandboxImage} {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			start := time.Now()
			_, err := tg.img.PullImage(pctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: img}})
			cancel()
			if err != nil {
				t.Fatalf("%s: pull %s: %v\n%s", tg.name, img, err, tg.logTail())
			}
			t.Logf("%s: pulled %s in %s (untimed)", tg.name, img, time.Since(start).Round(time.Millisecond))
		}
	}

	// 1. Memory. Baselines of every process together, before any pod.
	sleep(ctx, params.SettleSeconds)
	var pids []int
	for _, tg := range targets {
		pids = append(pids, tg.pid)
		if tg.ctdPid != 0 {
			pids = append(pids, tg.ctdPid)
		}
	}
	base := sampleMem(ctx, t, pids, params.RSSSamples)
	for _, tg := range targets {
		tg.res.Memory.Baseline = base[tg.pid]
		if tg.ctdPid != 0 {
			tg.res.Memory.Containerd.Baseline = base[tg.ctdPid]
		}
	}
	// A warm-up pod per runtime (after the baseline, which is "before any
	// pod"): the first pod pays for cold caches (runc, the shim binary,
	// the pause image's snapshot) that kubelet pays once per node.
	for _, tg := range targets {
		s := tg.startPod(ctx, "warmup", "crilat-warmup", 0)
		tg.stopPod(ctx, "warmup", &s)
		t.Logf("%s: warm-up pod start %.0f ms, stop+remove %.0f ms %s%s", tg.name, s.Start, s.StopRemove, s.StartErr, s.StopErr)
	}
	for _, tg := range targets {
		if ctx.Err() != nil {
			break
		}
		m := tg.res.Memory
		pods := make([]PodSample, params.RSSPods)
		runPool(ctx, params.RSSPods, params.Concurrency, func(i int) {
			pods[i] = tg.startPod(ctx, "rss", fmt.Sprintf("crilat-rss-%03d", i), i)
		})
		for _, p := range pods {
			if p.StartErr != "" {
				m.Failed++
			}
		}
		m.Pods = params.RSSPods - m.Failed
		sleep(ctx, params.SettleSeconds)
		ids := []int{tg.pid}
		if tg.ctdPid != 0 {
			ids = append(ids, tg.ctdPid)
		}
		loaded := sampleMem(ctx, t, ids, params.RSSSamples)
		m.Loaded = loaded[tg.pid]
		if tg.ctdPid != 0 {
			m.Containerd.Loaded = loaded[tg.ctdPid]
		}
		m.ShimCount, m.ShimRSSKiB, m.ShimPSSKiB = Shims(tg.ctdAddr)
		t.Logf("%s: %d pods running (%d failed): RSS %.1f -> %.1f MiB; %d shims, VmRSS %.1f MiB, PSS %.1f MiB", tg.name, m.Pods, m.Failed,
			kib2mib(m.Baseline.VmRSSKiB), kib2mib(m.Loaded.VmRSSKiB), m.ShimCount, kib2mib(m.ShimRSSKiB), kib2mib(m.ShimPSSKiB))
		runPool(ctx, params.RSSPods, params.Concurrency, func(i int) { tg.stopPod(ctx, "rss", &pods[i]) })
	}

	// 2. Sequential, interleaved pod by pod: both runtimes see the same
	// machine conditions and the same number of their own pods already up;
	// who goes first alternates so neither always follows the other.
	seq := map[*target]*Phase{}
	for _, tg := range targets {
		seq[tg] = &Phase{Name: PhaseSequential, Concurrency: 1, Pods: make([]PodSample, params.Pods)}
		tg.res.Phases = append(tg.res.Phases, seq[tg])
	}
	sleep(ctx, 2)
	for i := 0; i < params.Pods && ctx.Err() == nil; i++ {
		for _, tg := range alternate(targets, i) {
			seq[tg].Pods[i] = tg.startPod(ctx, PhaseSequential, fmt.Sprintf("crilat-seq-%03d", i), i)
			seq[tg].StartWallMs += seq[tg].Pods[i].Start
		}
	}
	for i := 0; i < params.Pods && ctx.Err() == nil; i++ {
		for _, tg := range alternate(targets, i) {
			tg.stopPod(ctx, PhaseSequential, &seq[tg].Pods[i])
			seq[tg].StopWallMs += seq[tg].Pods[i].StopRemove
		}
	}

	// 3. Parallel: one runtime at a time, so the workers of one never
	// compete with the other's.
	for _, tg := range targets {
		if ctx.Err() != nil {
			break
		}
		sleep(ctx, 2)
		ph := &Phase{Name: PhaseParallel, Concurrency: params.Concurrency, Pods: make([]PodSample, params.Pods)}
		tg.res.Phases = append(tg.res.Phases, ph)
		start := time.Now()
		runPool(ctx, params.Pods, params.Concurrency, func(i int) {
			ph.Pods[i] = tg.startPod(ctx, PhaseParallel, fmt.Sprintf("crilat-par-%03d", i), i)
		})
		ph.StartWallMs = msSince(start)
		start = time.Now()
		runPool(ctx, params.Pods, params.Concurrency, func(i int) { tg.stopPod(ctx, PhaseParallel, &ph.Pods[i]) })
		ph.StopWallMs = msSince(start)
	}
	if ctx.Err() != nil {
		t.Fatal("interrupted; no report written (the cleanups remove every pod and daemon)")
	}
	for _, tg := range targets {
		for _, l := range tg.logs {
			text, note := l.read()
			scan := ScanLog(l.name, text)
			scan.Note = note
			tg.res.Logs = append(tg.res.Logs, scan)
			t.Logf("%s: log %s: %d warnings, %d errors", tg.name, l.name, scan.Warnings, scan.Errors)
		}
		if !alive(tg.pid) {
			t.Errorf("%s (pid %d) is gone at the end of the run\n%s", tg.name, tg.pid, tg.logTail())
		}
		if n := tg.failures(); n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %d pod(s) failed to start or stop; see Errors.", tg.name, n))
		}
	}

	rep.Env.End()
	rep.Env.DurationSeconds = time.Since(t0).Seconds()
	rep.Finalize()
	if err := WriteOutputs(outDir, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s/cri.{json,md} and cri-*.svg (run took %s)", outDir, time.Since(t0).Round(time.Second))
	for _, r := range rep.Ratios {
		t.Logf("%-40s berth-cri %8.1f %s  containerd %8.1f %s  ratio %6.3f  %s", r.Name, r.Berth, r.Unit, r.Ref, r.Unit, r.Value, r.Result)
	}
}

// TestRender re-renders cri.md and the charts from a saved cri.json
// (CRI_PERF_RENDER=path/to/cri.json), e.g. after a change to the report's
// layout; it needs neither root nor the runtimes.
func TestRender(t *testing.T) {
	path := os.Getenv("CRI_PERF_RENDER")
	if path == "" {
		t.Skip("set CRI_PERF_RENDER=path/to/cri.json to re-render a report")
	}
	r, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	r.Finalize()
	if err := WriteOutputs(filepath.Dir(path), r); err != nil {
		t.Fatal(err)
	}
}

// paramsFromEnv reads the run's sizes.
func paramsFromEnv() (Params, string, error) {
	p := Params{Pods: 50, Concurrency: 10, RSSPods: 100, Image: busybox, Command: command,
		SandboxImage: crienv.SandboxImage, SettleSeconds: 10, RSSSamples: 5}
	mode := "full"
	if os.Getenv("CRI_PERF_QUICK") != "" {
		p.Pods, p.RSSPods, p.SettleSeconds, p.RSSSamples = 10, 20, 3, 3
		mode = "quick (smoke)"
	}
	for _, o := range []struct {
		env string
		dst *int
	}{{"CRI_PERF_PODS", &p.Pods}, {"CRI_PERF_CONCURRENCY", &p.Concurrency}, {"CRI_PERF_RSS_PODS", &p.RSSPods}} {
		v := os.Getenv(o.env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return p, "", fmt.Errorf("%s=%q: want a whole number from 1 to 500", o.env, v)
		}
		*o.dst = n
		if !strings.Contains(mode, "custom") {
			mode += ", custom sizes"
		}
	}
	return p, mode, nil
}

// target is one runtime under test.
type target struct {
	name    string
	rt      cri.RuntimeServiceClient
	img     cri.ImageServiceClient
	pid     int    // the process whose RSS is the runtime's
	ctdPid  int    // berth-cri's containerd; 0 for the reference
	ctdAddr string // the containerd whose shims are this runtime's
	logDir  string // pods' log directories, as kubelet's /var/log/pods
	res     *Runtime
	logTail func() string
	logs    []logSource // scanned for warnings and errors at the end

	mu     sync.Mutex
	failed int
}

// logSource is a log to scan: its text, and a note when that is partial.
type logSource struct {
	name string
	read func() (text, note string)
}

func fileLog(name, path string) logSource {
	return logSource{name, func() (string, string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", "unreadable: " + err.Error()
		}
		return string(b), ""
	}}
}

// berthLog is berth-cri's log. The harness keeps it in a t.TempDir() of
// this test and exposes only its tail, so it is found next to a TempDir of
// our own; if that ever fails, the tail is scanned and the report says so.
func berthLog(t *testing.T, b *crienv.BerthCRI) logSource {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(t.TempDir()), "*", "berth-cri.log"))
	if len(matches) == 1 {
		return fileLog("berth-cri", matches[0])
	}
	return logSource{"berth-cri", func() (string, string) { return b.LogTail(), "log file not found: its last 8000 bytes only" }}
}

// podConfig is a pod as kubelet sends it, minus what neither runtime needs
// here: its own network namespace, a per-container PID namespace, a log
// directory.
func podConfig(name, logDir string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "crilat", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: logDir,
		Labels:       map[string]string{"app": "crilat"},
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: namespaces()}},
	}
}

func containerConfig() *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "busybox"},
		Image:    &cri.ImageSpec{Image: busybox},
		Command:  command,
		LogPath:  "busybox.log",
		Linux: &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{
			NamespaceOptions: namespaces()}},
	}
}

// namespaces are kubelet's defaults: pod network and IPC, PID per container.
func namespaces() *cri.NamespaceOption {
	return &cri.NamespaceOption{Network: cri.NamespaceMode_POD, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}
}

// startPod runs RunPodSandbox, CreateContainer and StartContainer, timing
// each and the three together. The log directory is made first and
// untimed, as kubelet makes it before asking the runtime.
func (tg *target) startPod(ctx context.Context, phase, name string, i int) PodSample {
	s := PodSample{Index: i}
	logDir := filepath.Join(tg.logDir, name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		s.StartErr = err.Error()
		tg.recordErr(phase, name, s.StartErr)
		return s
	}
	cfg := podConfig(name, logDir)
	call := func(dst *float64, f func(context.Context) error) error {
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		start := time.Now()
		err := f(rctx)
		*dst = msSince(start)
		return err
	}
	t0 := time.Now()
	var ctrID string
	err := call(&s.RunPodSandbox, func(ctx context.Context) error {
		r, err := tg.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
		if err == nil {
			s.SandboxID = r.PodSandboxId
		}
		return wrap("RunPodSandbox", err)
	})
	if err == nil {
		err = call(&s.CreateContainer, func(ctx context.Context) error {
			r, err := tg.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: s.SandboxID,
				Config: containerConfig(), SandboxConfig: cfg})
			if err == nil {
				ctrID = r.ContainerId
			}
			return wrap("CreateContainer", err)
		})
	}
	if err == nil {
		err = call(&s.StartContainer, func(ctx context.Context) error {
			_, err := tg.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctrID})
			return wrap("StartContainer", err)
		})
	}
	s.Start = msSince(t0)
	if err != nil {
		s.StartErr = err.Error()
		tg.recordErr(phase, name, s.StartErr)
	}
	return s
}

// stopPod runs StopPodSandbox and RemovePodSandbox on a pod that got a
// sandbox, whether or not its container started (so nothing is left over);
// only fully started pods count in the statistics.
func (tg *target) stopPod(ctx context.Context, phase string, s *PodSample) {
	if s.SandboxID == "" {
		return
	}
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	_, err := tg.rt.StopPodSandbox(rctx, &cri.StopPodSandboxRequest{PodSandboxId: s.SandboxID})
	cancel()
	s.StopPodSandbox = msSince(t0)
	if err == nil {
		t1 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		_, err = tg.rt.RemovePodSandbox(rctx, &cri.RemovePodSandboxRequest{PodSandboxId: s.SandboxID})
		cancel()
		s.RemovePodSandbox = msSince(t1)
		err = wrap("RemovePodSandbox", err)
	} else {
		err = wrap("StopPodSandbox", err)
	}
	s.StopRemove = msSince(t0)
	if err != nil {
		s.StopErr = err.Error()
		tg.recordErr(phase, fmt.Sprintf("pod %d", s.Index), s.StopErr)
	}
}

func (tg *target) recordErr(phase, pod, msg string) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.failed++
	if len(tg.res.Errors) < maxErrors {
		tg.res.Errors = append(tg.res.Errors, fmt.Sprintf("%s %s: %s", phase, pod, msg))
	}
}

func (tg *target) failures() int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.failed
}

func (tg *target) mustRead(t *testing.T, pid int) MemReading {
	t.Helper()
	m, err := ReadMem(pid)
	if err != nil {
		t.Fatalf("%s: %v\n%s", tg.name, err, tg.logTail())
	}
	return m
}

func wrap(rpc string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", rpc, err)
}

// alternate returns the targets in order for even i and reversed for odd.
func alternate(ts []*target, i int) []*target {
	out := slices.Clone(ts)
	if i%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// runPool calls f(0..n-1) from conc workers, each taking the next index.
func runPool(ctx context.Context, n, conc int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// sampleMem reads every pid n times, one second apart, and returns the
// median reading of each.
func sampleMem(ctx context.Context, t *testing.T, pids []int, n int) map[int]MemReading {
	t.Helper()
	rs := map[int][]MemReading{}
	for k := 0; k < n; k++ {
		if k > 0 {
			sleep(ctx, 1)
		}
		for _, pid := range pids {
			m, err := ReadMem(pid)
			if err != nil {
				t.Fatalf("read memory: %v", err)
			}
			rs[pid] = append(rs[pid], m)
		}
	}
	out := map[int]MemReading{}
	for pid, r := range rs {
		out[pid] = MedianReading(r)
	}
	return out
}

// waitVersion polls Version until the runtime answers: containerd's CRI
// can come up a moment after containerd's own API.
func waitVersion(ctx context.Context, rt cri.RuntimeServiceClient) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := rt.Version(vctx, &cri.VersionRequest{})
		cancel()
		if err == nil {
			return v.RuntimeName + " " + v.RuntimeVersion + " (CRI " + v.RuntimeApiVersion + ")", nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sleep(ctx context.Context, seconds float64) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(seconds * float64(time.Second))):
	}
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// collectEnv describes the machine and the versions measured.
func collectEnv(t *testing.T, tools crienv.Paths, t0 time.Time) Env {
	e := Env{Host: perfnet.CollectHost(t0, crienv.RepoRoot(t))}
	out := func(name string, args ...string) string {
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			return "?"
		}
		return perfnet.FirstLine(string(b))
	}
	e.Containerd = out(tools.Containerd, "--version") + " (one build for both runtimes)"
	e.Runc = out(tools.Runc, "--version")
	e.CNIPlugins = "containernetworking-plugins " + out("dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins") +
		" (Debian, /usr/lib/cni): bridge, host-local, portmap, loopback"
	return e
}

func reproduce(mode string) []string {
	env := "BERTH_PERF_CRI=1"
	flag := ""
	if strings.HasPrefix(mode, "quick") {
		env += " CRI_PERF_QUICK=1"
		flag = " --quick"
	}
	return []string{
		"# as root, from the repository root; installs the dependencies and CRI tools first:",
		fmt.Sprintf("%-26s # all three suites: network, dataplane, CRI", "make perf"),
		fmt.Sprintf("%-26s # this suite only", "hack/perf-cri.sh"+flag),
		"# or just the measurement, as this report was made:",
		env + " go test -count=1 -v -timeout 60m -run TestCRILatency ./test/perf/crilat/",
	}
}
