package csifio

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/test/crienv"
	"github.com/berthdev/berth/test/csienv"
	"github.com/berthdev/berth/test/perf/crilat"
	"github.com/berthdev/berth/test/perf/perfnet"
)

// workPrefix names this suite's scratch directories (in the same temporary
// directory as the harness's, so on the filesystem of berth-csi's root):
// the native directory, the anchor's backing directory and its mount point.
const workPrefix = "bperf-csifio-"

// TestCSIFio is the berth-csi performance suite (hack/perf-csi.sh, make
// perf). It starts berth-csi through test/csienv and measures:
//
//  1. the node plugin's VmRSS with no volume and with RSSVolumes volumes
//     staged and published (first, while the process is fresh);
//  2. fio on three targets in one run: a berth-csi volume, the native
//     directory on the same filesystem as berth-csi's root, and go-fuse's
//     plain loopback of another directory there with passthrough disabled.
//     Each job runs on the three targets one after the other (the order
//     rotating from job to job), with the page cache dropped before every
//     run; the whole matrix is repeated Repeats times.
//
// Environment: BERTH_PERF_CSI=1 to run at all; CSI_PERF_QUICK=1 for a smoke
// run; CSI_PERF_RUNTIME (seconds), CSI_PERF_REPEATS, CSI_PERF_FILE_MIB,
// CSI_PERF_RSS_VOLUMES and CSI_PERF_IOENGINE (io_uring or libaio) override
// the sizes; CSI_PERF_OUT is the output directory (default
// test/perf/results). Only an environment that cannot run fails the test:
// throughput, ratios and memory are reported, never asserted, and a fio run
// that fails is recorded verbatim in the report.
func TestCSIFio(t *testing.T) {
	if os.Getenv("BERTH_PERF_CSI") == "" {
		t.Skip("set BERTH_PERF_CSI=1 (hack/perf-csi.sh, make perf) to run the berth-csi fio suite")
	}
	csienv.Require(t)
	fio, err := exec.LookPath("fio")
	if err != nil {
		t.Fatalf("fio not found (apt-get install -y fio, or run hack/perf-csi.sh): %v", err)
	}
	params, mode, err := paramsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	root := crienv.RepoRoot(t)
	outDir := os.Getenv("CSI_PERF_OUT")
	if outDir == "" {
		outDir = filepath.Join(root, "test", "perf", "results")
	}
	// ^C or SIGTERM stops fio instead of killing the test binary outright,
	// so the cleanups still unmount the anchor and every berth-csi volume.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	t0 := time.Now()
	rep := &Report{Mode: mode, Params: params, Jobs: Jobs(), Reproduce: reproduce(mode), Env: collectEnv(root, fio, t0)}
	sweepStale(t, os.TempDir())

	// A metrics port of our own: the harness numbers them per test process
	// from the same base, so a concurrent test of another package can hold
	// the one it picks, and berth-csi's FUSE counters must come from ours.
	// The flag given last wins.
	metricsAddr := freePort(t)
	// CSI_PERF_BERTH_FLAGS adds berth-csi flags (space-separated), for
	// tuning runs such as --max-write=131072.
	p := csienv.Start(t, append([]string{"--metrics-address=" + metricsAddr}, strings.Fields(os.Getenv("CSI_PERF_BERTH_FLAGS"))...)...)
	rep.Env.BerthArgs = p.Args
	rep.Env.GoFuseBerth = depVersion(p.Bin)
	pid, err := FindPlugin(p.Bin, p.Endpoint)
	if err != nil {
		t.Fatal(err)
	}

	// 1. Memory, while the plugin is fresh.
	rep.Memory = measureMemory(ctx, t, p, pid, params)
	if ctx.Err() != nil {
		t.Fatal("interrupted")
	}

	// Scratch directories next to the harness's, on the same filesystem.
	work, err := os.MkdirTemp(filepath.Dir(p.Dir), workPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the anchor's unmount, so it runs after it.
	t.Cleanup(func() { removeWork(t, work) })
	if err := os.WriteFile(filepath.Join(work, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	nativeDir := filepath.Join(work, "native")
	anchorSrc := filepath.Join(work, "anchor-backing")
	anchorMnt := filepath.Join(work, "anchor-mnt")
	for _, d := range []string{nativeDir, anchorSrc, anchorMnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(p.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	if a, b := devOf(t, p.Root), devOf(t, nativeDir); a != b {
		t.Fatalf("native dir %s (dev %d) is not on the filesystem of berth-csi's root %s (dev %d)", nativeDir, b, p.Root, a)
	}
	mounts := Mounts()
	backingSource := ""
	if m, ok := MountOf(mounts, nativeDir); ok {
		rep.Env.BackingFS = fmt.Sprintf("%s (%s on %s, %s)", m.FSType, m.Source, m.Point, m.Options)
		rep.Env.BackingDevice = blockDevice(m.Source)
		backingSource = m.Source
	}
	if _, _, ok := BlockStat(backingSource); !ok {
		rep.Notes = append(rep.Notes, fmt.Sprintf("The backing filesystem's source %q is not a block device with a stat file: device bytes are not reported.", backingSource))
	}

	// 2. The anchor: probe mounts prove the option works, then the real
	// one is checked the same way.
	check, err := checkAnchor(work)
	if err != nil {
		t.Fatalf("anchor probe: %v", err)
	}
	anc, err := mountAnchor(anchorSrc, anchorMnt, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := anc.unmount(); err != nil {
			t.Errorf("anchor: %v", err)
		}
	})
	probe := filepath.Join(work, "probe-src", "probe")
	if ok, msg := anc.backingFdAllowed(probe); ok {
		check.PassthroughOff = false
		check.Check += " But on the measured anchor mount: " + msg + "."
		rep.Notes = append(rep.Notes, "The anchor's FUSE connection accepted a backing file: passthrough was NOT off; its figures are not the plain-FUSE anchor.")
	} else {
		check.Check += " The same call on the measured anchor mount: " + msg + "."
	}
	rep.Anchor = check
	if !check.PassthroughOff {
		t.Errorf("the anchor's passthrough could not be verified off: %s %s", check.Check, check.Control)
	}

	// 3. The berth-csi volume.
	volID, volDir := p.Volume("bperf-fio", params.VolumeBytes)
	mounts = Mounts()
	if m, ok := MountOf(mounts, volDir); ok {
		rep.Env.BerthMount = mountString(m)
	}
	if m, ok := MountOf(mounts, anchorMnt); ok {
		rep.Env.AnchorMount = mountString(m)
	}
	metrics := "http://" + metricsAddr + "/metrics"

	rep.Targets = []*Target{
		{Name: Native, Dir: nativeDir, Description: "a plain directory on the filesystem that holds berth-csi's --root: the ceiling"},
		{Name: Berth, Dir: volDir, Description: fmt.Sprintf("a %s berth-csi volume (CreateVolume, NodeStageVolume, NodePublishVolume through test/csienv), "+
			"served by the berth-csi binary built from this tree: FUSE passthrough for read-only opens, FOPEN_DIRECT_IO for writers, max_write and max_readahead 1 MiB", bytesLabel(params.VolumeBytes))},
		{Name: Anchor, Dir: anchorMnt, Description: "go-fuse v2.12.1's plain loopback without passthrough, the \"typical FUSE driver\": " + AnchorOptions},
	}
	files := map[string]string{}
	for _, tg := range rep.Targets {
		files[tg.Name] = filepath.Join(tg.Dir, "bperf-fio.dat")
	}
	fioVersion := ""
	run := func(args []string) ([]byte, error) {
		out := filepath.Join(work, "fio-out.json")
		os.Remove(out)
		rctx, cancel := context.WithTimeout(ctx, time.Duration(params.RuntimeSeconds)*time.Second+10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(rctx, fio, append(args, "--output="+out)...)
		stderr, err := cmd.CombinedOutput()
		b, _ := os.ReadFile(out)
		if err != nil {
			msg := strings.TrimSpace(string(stderr) + "\n" + tailString(string(b), 1500))
			return b, fmt.Errorf("fio: %v: %s", err, tailString(msg, 2000))
		}
		return b, nil
	}
	layout := func(name string) error {
		if st, err := os.Stat(files[name]); err == nil && st.Size() >= params.FileBytes {
			return nil
		}
		start := time.Now()
		_, err := run(LayoutArgs(params, files[name]))
		if err == nil {
			t.Logf("%s: laid out %s in %s (untimed)", name, bytesLabel(params.FileBytes), time.Since(start).Round(time.Millisecond))
		}
		return err
	}
	counterErr := ""
	volCounters := func() (rd, wr float64, ok bool) {
		text, err := scrape(metrics)
		if err != nil {
			counterErr = err.Error()
			return 0, 0, false
		}
		rd, ok1 := ParseVolumeCounter(text, "berth_csi_volume_read_bytes_total", volID)
		wr, ok2 := ParseVolumeCounter(text, "berth_csi_volume_written_bytes_total", volID)
		if !ok1 || !ok2 {
			counterErr = fmt.Sprintf("no berth_csi_volume_{read,written}_bytes_total for volume %s at %s", volID, metrics)
		}
		return rd, wr, ok1 && ok2
	}

	// 4. The matrix, interleaved.
	for rpt := 0; rpt < params.Repeats && ctx.Err() == nil; rpt++ {
		for ji, job := range rep.Jobs {
			if ctx.Err() != nil {
				break
			}
			for k := range TargetNames {
				name := TargetNames[(rpt*len(rep.Jobs)+ji+k)%len(TargetNames)]
				s := Sample{Job: job.ID, Target: name, Repeat: rpt}
				if err := layout(name); err != nil {
					s.Error = "layout: " + err.Error()
				}
				if s.Error == "" {
					dropCaches(t, nativeDir)
					var r0, w0 float64
					var cok bool
					if name == Berth {
						r0, w0, cok = volCounters()
					}
					dr0, dw0, dok := BlockStat(backingSource)
					b, err := run(FioArgs(job, params, files[name]))
					if dr1, dw1, ok := BlockStat(backingSource); ok && dok {
						s.DeviceReadBytes, s.DeviceWrittenBytes = dr1-dr0, dw1-dw0
					}
					if err != nil {
						s.Error = err.Error()
					} else if res, v, err := ParseFio(b, !job.Reads()); err != nil {
						s.Error = err.Error()
					} else {
						s.FioResult, fioVersion = res, v
					}
					if name == Berth && cok && s.Error == "" {
						if r1, w1, ok := volCounters(); ok {
							dr, dw := r1-r0, w1-w0
							s.FUSEReadBytes, s.FUSEWrittenBytes = &dr, &dw
						}
					}
				}
				rep.Samples = append(rep.Samples, s)
				if s.Error != "" {
					t.Logf("%-22s %-14s run %d: FAILED: %s", job.ID, name, rpt+1, s.Error)
				} else {
					t.Logf("%-22s %-14s run %d: %9.1f MiB/s %9.0f IOPS  clat p99 %8.0f µs", job.ID, name, rpt+1,
						s.BWBytes/(1<<20), s.IOPS, s.ClatP99Us)
				}
			}
		}
	}
	if ctx.Err() != nil {
		t.Fatal("interrupted; no report written (the cleanups unmount everything)")
	}
	if fioVersion != "" && !strings.HasPrefix(rep.Env.Fio, fioVersion) {
		rep.Env.Fio = fioVersion + " (as fio's JSON says; `fio --version`: " + rep.Env.Fio + ")"
	}
	if counterErr != "" {
		rep.Notes = append(rep.Notes, "berth-csi's FUSE server counters could not always be read: "+counterErr)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Errorf("berth-csi (pid %d) is gone at the end of the run\n%s", pid, tailString(p.Log(), 4000))
		rep.Notes = append(rep.Notes, "berth-csi exited during the run.")
	} else {
		rep.Memory.PeakKiB = ReadHWM(pid)
	}
	if n := failures(rep.Samples); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d fio run(s) failed; see Errors.", n))
	}

	rep.Env.End()
	rep.Env.DurationSeconds = time.Since(t0).Seconds()
	rep.Finalize()
	if err := WriteOutputs(outDir, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s/csi.{json,md} and csi-*.svg (run took %s)", outDir, time.Since(t0).Round(time.Second))
	for _, r := range rep.Ratios {
		t.Logf("%-22s native %9.0f  berth %9.0f  anchor %9.0f %-5s  berth÷native %5.2f  anchor÷native %5.2f  berth÷anchor %5.2f  %s %s",
			r.Job, r.Native, r.Berth, r.Anchor, r.Unit, r.BerthNative, r.AnchorNative, r.BerthAnchor, r.Result, r.Why)
	}
	if m := rep.Memory; m != nil {
		t.Logf("berth-csi VmRSS %.1f MiB with no volume, %.1f MiB with %d: %.0f KiB per volume",
			kib2mib(m.Baseline.VmRSSKiB), kib2mib(m.Loaded.VmRSSKiB), m.Volumes, m.PerVolumeKiB())
	}
}

// TestRender re-renders csi.md and the charts from a saved csi.json
// (CSI_PERF_RENDER=path/to/csi.json); it needs neither root nor fio.
func TestRender(t *testing.T) {
	path := os.Getenv("CSI_PERF_RENDER")
	if path == "" {
		t.Skip("set CSI_PERF_RENDER=path/to/csi.json to re-render a report")
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
	p := Params{FileBytes: 1 << 30, VolumeBytes: 4 << 30, RuntimeSeconds: 20, Repeats: 2, IOEngine: "io_uring", IODepth: 16,
		RSSVolumes: 20, RSSVolumeBytes: 64 << 20, SettleSeconds: 5, RSSSamples: 5}
	mode := "full"
	if os.Getenv("CSI_PERF_QUICK") != "" {
		p.FileBytes, p.RuntimeSeconds, p.Repeats, p.SettleSeconds, p.RSSSamples = 256<<20, 3, 1, 2, 3
		mode = "quick (smoke)"
	}
	custom := false
	for _, o := range []struct {
		env      string
		dst      *int
		min, max int
	}{{"CSI_PERF_RUNTIME", &p.RuntimeSeconds, 1, 600}, {"CSI_PERF_REPEATS", &p.Repeats, 1, 20}, {"CSI_PERF_RSS_VOLUMES", &p.RSSVolumes, 1, 200}} {
		v := os.Getenv(o.env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < o.min || n > o.max {
			return p, "", fmt.Errorf("%s=%q: want a whole number from %d to %d", o.env, v, o.min, o.max)
		}
		*o.dst, custom = n, true
	}
	if v := os.Getenv("CSI_PERF_FILE_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 16 || n > 3072 {
			return p, "", fmt.Errorf("CSI_PERF_FILE_MIB=%q: want a whole number from 16 to 3072 (the volume holds 4 GiB)", v)
		}
		p.FileBytes, custom = int64(n)<<20, true
	}
	if v := os.Getenv("CSI_PERF_IOENGINE"); v != "" {
		if v != "io_uring" && v != "libaio" {
			return p, "", fmt.Errorf("CSI_PERF_IOENGINE=%q: want io_uring or libaio", v)
		}
		p.IOEngine, custom = v, true
	}
	if custom {
		mode += ", custom sizes"
	}
	return p, mode, nil
}

// measureMemory reads the plugin's VmRSS with no volume, stages and
// publishes params.RSSVolumes volumes, reads it again, and removes them.
func measureMemory(ctx context.Context, t *testing.T, p *csienv.Plugin, pid int, params Params) *Memory {
	m := &Memory{PID: pid, Volumes: params.RSSVolumes}
	sleep(ctx, params.SettleSeconds)
	m.Baseline = sampleMem(ctx, t, pid, params.RSSSamples)
	ids := make([]string, 0, params.RSSVolumes)
	for i := 0; i < params.RSSVolumes && ctx.Err() == nil; i++ {
		id, _ := p.Volume(fmt.Sprintf("bperf-rss-%02d", i), params.RSSVolumeBytes)
		ids = append(ids, id)
	}
	sleep(ctx, params.SettleSeconds)
	m.Loaded = sampleMem(ctx, t, pid, params.RSSSamples)
	t.Logf("berth-csi VmRSS: %.1f MiB with no volume, %.1f MiB with %d volumes staged and published",
		kib2mib(m.Baseline.VmRSSKiB), kib2mib(m.Loaded.VmRSSKiB), len(ids))
	for _, id := range ids {
		p.Unpublish(id)
		if _, err := p.Controller.DeleteVolume(csienv.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Logf("DeleteVolume %s: %v (left to the harness's cleanup)", id, err)
		}
	}
	return m
}

// sampleMem reads pid n times, one second apart, and returns the median
// reading.
func sampleMem(ctx context.Context, t *testing.T, pid, n int) crilat.MemReading {
	t.Helper()
	var rs []crilat.MemReading
	for k := 0; k < n; k++ {
		if k > 0 {
			sleep(ctx, 1)
		}
		m, err := crilat.ReadMem(pid)
		if err != nil {
			t.Fatalf("read berth-csi memory: %v", err)
		}
		rs = append(rs, m)
	}
	return crilat.MedianReading(rs)
}

// dropCaches writes the backing filesystem's dirty data back (syncfs on
// dir: every target's data lands there, and unlike sync(2) it never waits
// on other tests' FUSE mounts) and drops the page cache, dentries and
// inodes, so the next run starts cold on every target.
func dropCaches(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatalf("syncfs %s: %v", dir, err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// freePort returns a 127.0.0.1 address no one listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func scrape(url string) (string, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func devOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

// blockDevice describes a /dev/NAME source: its I/O scheduler and whether
// the kernel calls it rotational.
func blockDevice(source string) string {
	name := filepath.Base(source)
	if !strings.HasPrefix(source, "/dev/") {
		return ""
	}
	q := filepath.Join("/sys/class/block", name, "queue")
	if _, err := os.Stat(q); err != nil {
		// A partition: its queue is the parent disk's.
		q = filepath.Join("/sys/class/block", name, "..", "queue")
	}
	sched := perfnet.ReadTrim(filepath.Join(q, "scheduler"))
	rot := perfnet.ReadTrim(filepath.Join(q, "rotational"))
	model := perfnet.ReadTrim(filepath.Join("/sys/class/block", name, "device", "model"))
	s := fmt.Sprintf("%s: scheduler %s, rotational %s", source, sched, rot)
	if model != "" && model != "?" {
		s += ", model " + model
	}
	return s
}

// sweepStale removes what an earlier run killed with SIGKILL left: a
// scratch directory whose owner process is gone, after detaching any mount
// still under it (a dead anchor).
func sweepStale(t *testing.T, tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, workPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing %s left by an earlier run (pid %d)", d, pid)
		removeWork(t, d)
	}
}

// removeWork detaches every mount under dir (deepest first) and removes it.
func removeWork(t *testing.T, dir string) {
	for _, m := range csienv.MountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("remove %s: %v", dir, err)
	}
}

func failures(ss []Sample) int {
	n := 0
	for _, s := range ss {
		if s.Error != "" {
			n++
		}
	}
	return n
}

func sleep(ctx context.Context, seconds int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(seconds) * time.Second):
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// depVersion is the go-fuse version a Go binary was built with.
func depVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "?"
	}
	return goFuse(bi.Deps)
}

func goFuse(deps []*debug.Module) string {
	for _, d := range deps {
		if d.Path == "github.com/hanwen/go-fuse/v2" {
			if d.Replace != nil {
				return d.Path + " " + d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Path + " " + d.Version
		}
	}
	return "?"
}

// collectEnv describes the machine and the versions measured.
func collectEnv(root, fio string, t0 time.Time) Env {
	e := Env{Host: perfnet.CollectHost(t0, root)}
	out := func(name string, args ...string) (string, bool) {
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			return "?", false
		}
		return strings.TrimSpace(string(b)), true
	}
	e.Fio, _ = out(fio, "--version")
	if v, ok := out("dpkg-query", "-W", "-f=${Version}", "fio"); ok {
		e.Fio += " (Debian " + v + ")"
	}
	// A test binary records no dependencies; the module graph says what it
	// was compiled with.
	e.GoFuseAnchor = "?"
	if v, ok := out("go", "-C", root, "list", "-m", "github.com/hanwen/go-fuse/v2"); ok {
		e.GoFuseAnchor = v
	}
	e.CSIWorkTree = "clean (as committed)"
	if st, ok := out("git", "-C", root, "status", "--porcelain", "--", "csi", "cmd/berth-csi"); ok && st != "" {
		var files []string
		for l := range strings.SplitSeq(st, "\n") {
			files = append(files, strings.TrimSpace(l))
		}
		e.CSIWorkTree = "uncommitted changes built in: " + strings.Join(files, ", ")
	} else if !ok {
		e.CSIWorkTree = "?"
	}
	return e
}

func reproduce(mode string) []string {
	env := "BERTH_PERF_CSI=1"
	flag := ""
	if strings.HasPrefix(mode, "quick") {
		env += " CSI_PERF_QUICK=1"
		flag = " --quick"
	}
	return []string{
		"# as root, from the repository root; installs fio (Debian) first:",
		fmt.Sprintf("%-26s # every suite: network, dataplane, CRI, CSI", "make perf"),
		fmt.Sprintf("%-26s # this suite only", "hack/perf-csi.sh"+flag),
		"# or just the measurement, as this report was made:",
		env + " go test -count=1 -v -timeout 90m -run TestCSIFio ./test/perf/csifio/",
	}
}
