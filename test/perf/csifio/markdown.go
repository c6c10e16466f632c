package csifio

import (
	"fmt"
	"math"
	"strings"

	"github.com/berthdev/berth/test/perf/report"
)

// Markdown renders csi.md.
func Markdown(r *Report) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p := r.Params
	w("# berth-csi performance report: fio vs the native directory and plain FUSE\n\n")
	w("> **Caveat: this is a 2-core noisy VM** whose disk and CPUs are shared with whatever else runs on it. ")
	w("fio, berth-csi's FUSE server and the anchor's FUSE server all share two vCPUs, so absolute numbers and ratios move from run to run. ")
	w("Compare the three targets *within* one run (they are interleaved job by job, the order rotating) and look at the min–max ranges. ")
	w("This is a report, not a pass/fail test: a missed target never fails the run.\n\n")
	w("Run %s (%s, took %s), %s mode: %d × %d s per job and target, %s file, `%s` at iodepth %d. ",
		r.Env.Date, r.Env.Hostname, fmtDuration(r.Env.DurationSeconds), r.Mode, p.Repeats, p.RuntimeSeconds,
		bytesLabel(p.FileBytes), p.IOEngine, p.IODepth)
	w("Kernel %s, %d CPUs (%s), %s; backing filesystem %s.\n\n", r.Env.Kernel, r.Env.CPUs, r.Env.CPUModel, r.Env.OS, r.Env.BackingFS)
	w("Machine load: load average %s at start, %s at end; over the run the CPUs were %.0f%% busy in all (this run included) and %.1f%% stolen by the hypervisor.\n\n",
		r.Env.LoadAvgStart, r.Env.LoadAvgEnd, r.Env.CPUBusyPct, r.Env.CPUStealPct)

	w("## Reproduce\n\n```sh\n")
	for _, l := range r.Reproduce {
		w("%s\n", l)
	}
	w("```\n\n")

	w("## Ratios vs targets\n\n")
	w("Medians of each target's runs. Sequential jobs compare MiB/s, random jobs IOPS. Targets (issue), berth-csi ÷ native: ")
	w("sequential ≥ %.2f, random read ≥ %.2f, random write ≥ %.2f; and where the plain-FUSE anchor reaches less than %.1f× native, ",
		ClassTarget(ClassSequential), ClassTarget(ClassRandRead), ClassTarget(ClassRandWrite), AnchorThreshold)
	w("berth-csi must also reach ≥ %.1f× the anchor. \"noise\" says whether berth-csi's and native's min–max ranges over the repeats overlap.\n\n", AnchorFactor)
	var rows [][]string
	for _, ra := range r.Ratios {
		res := ra.Result
		if res == "target missed" {
			res = "**" + res + "**"
		}
		tgt := fmt.Sprintf("≥ %.2f", ra.Target)
		if ra.AnchorRule {
			tgt += fmt.Sprintf(", ÷ anchor ≥ %.1f", AnchorFactor)
		}
		rows = append(rows, []string{ra.Job, val(ra.Native, ra.Unit), val(ra.Berth, ra.Unit), val(ra.Anchor, ra.Unit),
			f2(ra.BerthNative), f2(ra.AnchorNative), f2(ra.BerthAnchor), tgt, res, ra.Why, ra.Noise})
	}
	w("%s\n", report.Table([]string{"job", "native", "berth-csi", "go-fuse loopback", "berth ÷ native", "anchor ÷ native",
		"berth ÷ anchor", "target", "result", "why", "noise"}, rows))
	met, missed := 0, 0
	for _, ra := range r.Ratios {
		switch ra.Result {
		case "target met":
			met++
		case "target missed":
			missed++
		}
	}
	w("%d of %d jobs meet their target, %d miss it.\n\n", met, len(r.Ratios), missed)
	w("![berth-csi and plain FUSE relative to native](csi-ratio.svg)\n\n")

	w("## Every job\n\n")
	w("fio `--ioengine=%s --iodepth=%d --numjobs=1 --time_based --runtime=%d --size=%s --fallocate=none --invalidate=0`, ",
		p.IOEngine, p.IODepth, p.RuntimeSeconds, bytesLabel(p.FileBytes))
	w("one file per target, `--direct=0` (buffered) or `--direct=1` (O_DIRECT). Before every run: the file is laid out if it is not at full size ")
	w("(a sequential 1 MiB write of the whole file through the target, then fsync), then syncfs(2) on the backing filesystem and `echo 3 > /proc/sys/vm/drop_caches`, ")
	w("so buffered reads start cold on every target. ")
	w("**Buffered runs do not stay cold**: the file fits in memory, so after the first pass over it a buffered read is served from the page cache ")
	w("(the backing file's for native and berth-csi's passthrough; the FUSE inode's, filled through the server, for the loopback). ")
	w("fio's own `--invalidate=1` is off on purpose: its fadvise(DONTNEED), repeated at every wrap of a time-based run, drops a native file's pages but only the FUSE inode's pages of a FUSE file, never the backing file's, so it would keep native cold and the FUSE targets warm. ")
	w("Writes are not fsynced: buffered write figures include what the page cache absorbs. ")
	w("\"device share\" is the backing block device's bytes read (read jobs) or written (write jobs) during the run divided by fio's bytes: near 1 the run was device-bound, near 0 it ran in the page cache (other I/O on the machine counts too). ")
	w("\"FUSE server MiB/s\" is what berth-csi's own server read / wrote for the volume per second of the run (its metrics): passthrough reads never reach it.\n\n")
	rows = nil
	for _, j := range r.Jobs {
		for _, t := range r.measured() {
			s, ok := r.summary(j.ID, t.Name)
			if !ok {
				rows = append(rows, []string{j.ID, Label(t.Name), "n/a", "", "", "", "", "", fmt.Sprintf("0 (%d)", s.Failed)})
				continue
			}
			fuse := ""
			if t.Name == Berth && !math.IsNaN(s.FUSEReadMiBps) {
				fuse = fmt.Sprintf("%.0f / %.0f", s.FUSEReadMiBps, s.FUSEWrittenMiBps)
			}
			rows = append(rows, []string{j.ID, Label(t.Name), val(s.Median, j.Unit), val(s.Min, "") + "–" + val(s.Max, ""),
				fmt.Sprintf("%.0f", s.MiBps), fmt.Sprintf("%.0f", s.ClatP99Us), f2(s.DeviceShare), fuse, fmt.Sprintf("%d (%d)", s.N, s.Failed)})
		}
	}
	w("%s\n", report.Table([]string{"job", "target", "median", "min–max", "MiB/s", "clat p99 µs", "device share", "FUSE server MiB/s read / written", "runs (failed)"}, rows))
	w("![Sequential throughput](csi-seq.svg)\n\n")
	w("![Random IOPS](csi-random.svg)\n\n")

	w("## Node plugin memory per mounted volume\n\n")
	if m := r.Memory; m != nil && m.Loaded.VmRSSKiB > 0 {
		w("VmRSS of the berth-csi process (pid %d, found by its command line: the harness binary with this run's `--endpoint`) from `/proc/PID/status`: ",
			m.PID)
		w("the median of %d readings one second apart, after %d s to settle, first with no volume, then with %d volumes ", p.RSSSamples, p.SettleSeconds, m.Volumes)
		w("(%s each) created, staged and published (one FUSE mount and server each), idle. The fio volume comes after, so it is in neither reading.\n\n", bytesLabel(p.RSSVolumeBytes))
		lo0, hi0 := report.MinMax(i64s(m.Baseline.SamplesKiB))
		lo1, hi1 := report.MinMax(i64s(m.Loaded.SamplesKiB))
		w("%s\n", report.Table([]string{"reading", "VmRSS MiB", "range MiB", "RssAnon MiB", "RssFile MiB"}, [][]string{
			{"no volume", fmt.Sprintf("%.1f", kib2mib(m.Baseline.VmRSSKiB)), fmt.Sprintf("%.1f–%.1f", lo0/1024, hi0/1024),
				fmt.Sprintf("%.1f", kib2mib(m.Baseline.RssAnonKiB)), fmt.Sprintf("%.1f", kib2mib(m.Baseline.RssFileKiB))},
			{fmt.Sprintf("%d volumes", m.Volumes), fmt.Sprintf("%.1f", kib2mib(m.Loaded.VmRSSKiB)), fmt.Sprintf("%.1f–%.1f", lo1/1024, hi1/1024),
				fmt.Sprintf("%.1f", kib2mib(m.Loaded.RssAnonKiB)), fmt.Sprintf("%.1f", kib2mib(m.Loaded.RssFileKiB))},
		}))
		w("**Per mounted volume: %.0f KiB** ((rss%d − rss0) / %d).", m.PerVolumeKiB(), m.Volumes, m.Volumes)
		if m.PeakKiB > 0 {
			w(" Peak (VmHWM) at the end of the run, after the fio jobs: %.1f MiB.", kib2mib(m.PeakKiB))
		}
		w(" Go returns freed heap to the kernel lazily, so a reading can move by a few hundred KiB with GC timing.\n\n")
	} else {
		w("Not measured.\n\n")
	}
	w("![berth-csi resident memory](csi-rss.svg)\n\n")

	w("## Targets\n\n")
	for _, t := range r.Targets {
		w("- **%s**: %s", Label(t.Name), t.Description)
		if t.Skipped != "" {
			w(" — **not measured**: %s", t.Skipped)
		}
		w("\n")
	}
	w("\n")
	a := r.Anchor
	w("The anchor's passthrough is off: ")
	if a.PassthroughOff {
		w("**verified**. ")
	} else {
		w("**not verified**. ")
	}
	w("%s %s\n\n", a.Check, a.Control)
	if a.InitFlags != "" {
		verdict := "no PASSTHROUGH"
		if strings.Contains(a.InitFlags, "PASSTHROUGH") {
			verdict = "**PASSTHROUGH negotiated**"
		}
		w("The negotiated capabilities, go-fuse's INIT reply on the probe mount with the anchor's options (its debug log): `%s` — %s.\n\n", a.InitFlags, verdict)
	}

	var errs []string
	for _, s := range r.Samples {
		if s.Error != "" {
			errs = append(errs, fmt.Sprintf("- %s on %s (run %d): `%s`", s.Job, Label(s.Target), s.Repeat+1, strings.ReplaceAll(s.Error, "`", "'")))
		}
	}
	if len(errs) > 0 {
		w("## Errors\n\nfio runs that failed, verbatim (left out of the medians):\n\n%s\n\n", strings.Join(errs, "\n"))
	}
	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}

	w("## Environment\n\n")
	w("%s\n", report.Table([]string{"what", "value"}, append(r.Env.Rows(), [][]string{
		{"fio", r.Env.Fio},
		{"go-fuse (berth-csi binary)", r.Env.GoFuseBerth},
		{"go-fuse (anchor)", r.Env.GoFuseAnchor},
		{"backing filesystem", r.Env.BackingFS},
		{"backing device", r.Env.BackingDevice},
		{"berth-csi volume mount", "`" + r.Env.BerthMount + "`"},
		{"anchor mount", "`" + r.Env.AnchorMount + "`"},
		{"berth-csi flags", "`" + strings.Join(r.Env.BerthArgs, " ") + "`"},
		{"Go", r.Env.GoVersion},
		{"berth commit", r.Env.GitCommit},
		{"csi/ work tree when built", r.Env.CSIWorkTree},
		{"load average (start / end)", r.Env.LoadAvgStart + " / " + r.Env.LoadAvgEnd},
	}...)))
	return b.String()
}

func val(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	s := fmt.Sprintf("%.0f", v)
	if unit != "" {
		s += " " + unit
	}
	return s
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func fmtDuration(s float64) string {
	if s <= 0 {
		return "?"
	}
	m := int(s) / 60
	return fmt.Sprintf("%dm%02ds", m, int(s)%60)
}
