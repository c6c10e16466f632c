package csifio

import (
	"bytes"
	"encoding/xml"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdev/berth/test/perf/crilat"
)

// fioJSON is fio 3.33's --output-format=json for one job, trimmed to the
// fields the suite reads (and a warning line before it, as fio prints on
// some errors).
const fioJSON = `fio: some warning
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "rand-read-direct",
      "error" : 0,
      "read" : {
        "io_bytes" : 670646272, "bw_bytes" : 334486918, "iops" : 81661.845387, "runtime" : 2005,
        "clat_ns" : { "mean" : 190000.5, "percentile" : { "50.000000" : 175104, "99.000000" : 272384 } }
      },
      "write" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "runtime" : 0, "clat_ns" : { "mean" : 0.0 } },
      "usr_cpu" : 6.3, "sys_cpu" : 33.2
    }
  ]
}`

func TestParseFio(t *testing.T) {
	r, v, err := ParseFio([]byte(fioJSON), false)
	if err != nil {
		t.Fatal(err)
	}
	if v != "fio-3.33" || r.IOBytes != 670646272 || r.RuntimeMs != 2005 || math.Abs(r.IOPS-81661.845387) > 1e-6 {
		t.Fatalf("got %q %+v", v, r)
	}
	if r.ClatP50Us != 175.104 || r.ClatP99Us != 272.384 || r.SysCPU != 33.2 {
		t.Fatalf("latency/cpu: %+v", r)
	}
	if _, _, err := ParseFio([]byte(fioJSON), true); err == nil || !strings.Contains(err.Error(), "did no I/O") {
		t.Fatalf("write side of a read job: %v", err)
	}
	bad := strings.Replace(fioJSON, `"error" : 0`, `"error" : 22`, 1)
	if _, _, err := ParseFio([]byte(bad), false); err == nil || !strings.Contains(err.Error(), "error 22") {
		t.Fatalf("job error: %v", err)
	}
	if _, _, err := ParseFio([]byte("fio: engine io_uring not loadable"), false); err == nil {
		t.Fatal("no JSON: want an error")
	}
}

func TestJobsAndArgs(t *testing.T) {
	jobs := Jobs()
	if len(jobs) != 8 {
		t.Fatalf("%d jobs, want 8", len(jobs))
	}
	seen := map[string]bool{}
	for _, j := range jobs {
		if seen[j.ID] {
			t.Fatalf("duplicate job %s", j.ID)
		}
		seen[j.ID] = true
		if (j.Pattern == PatternSeqRead || j.Pattern == PatternRandRead) != j.Reads() {
			t.Fatalf("%s: Reads() = %v", j.ID, j.Reads())
		}
	}
	p := Params{FileBytes: 1 << 30, RuntimeSeconds: 20, IOEngine: "io_uring", IODepth: 16}
	args := strings.Join(FioArgs(jobs[6], p, "/x/f"), " ")
	for _, want := range []string{"--rw=randread", "--bs=4k", "--direct=1", "--iodepth=16", "--ioengine=io_uring",
		"--size=1073741824", "--runtime=20", "--time_based=1", "--invalidate=0", "--filename=/x/f", "--output-format=json"} {
		if !strings.Contains(args, want) {
			t.Errorf("%s: args %q lack %s", jobs[6].ID, args, want)
		}
	}
	if l := strings.Join(LayoutArgs(p, "/x/f"), " "); !strings.Contains(l, "--end_fsync=1") || !strings.Contains(l, "--rw=write") {
		t.Errorf("layout args %q", l)
	}
}

func TestIsPlugin(t *testing.T) {
	bin, ep := "/o/bin/berth-csi", "unix:///tmp/berthcsi-1/csi.sock"
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{bin, "--mode=all", "--endpoint=" + ep, "--log-level=debug"}, true},
		{[]string{bin, "--endpoint", ep}, true},
		{[]string{bin, "fdstore", "--socket=unix:///tmp/berthcsi-1/fdstore.sock"}, false},
		{[]string{bin, "--endpoint=unix:///tmp/berthcsi-2/csi.sock"}, false},
		{[]string{"/other/berth-csi", "--endpoint=" + ep}, false},
		{[]string{bin, "--endpoint"}, false},
		{nil, false},
	} {
		if got := IsPlugin(c.args, bin, ep); got != c.want {
			t.Errorf("IsPlugin(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

func TestMountinfo(t *testing.T) {
	text := `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
98 22 0:50 / /tmp/bperf-csifio-1/anchor\040mnt rw,nosuid,nodev,relatime shared:60 - fuse.bperf-loopback bperf-anchor rw,user_id=0,group_id=0,allow_other,max_read=131072
99 22 0:51 / /tmp/berthcsi-1/pods/v/mount rw,nosuid,nodev - fuse.berth-csi berth-csi:v rw,max_read=1048576
`
	ms := ParseMountinfo(text)
	if len(ms) != 3 {
		t.Fatalf("%d entries", len(ms))
	}
	if ms[1].Point != "/tmp/bperf-csifio-1/anchor mnt" || ms[1].FSType != "fuse.bperf-loopback" || ms[1].Source != "bperf-anchor" {
		t.Fatalf("entry: %+v", ms[1])
	}
	if m, ok := MountOf(ms, "/tmp/bperf-csifio-1/native"); !ok || m.FSType != "ext4" || m.Source != "/dev/vda" {
		t.Fatalf("native: %+v", m)
	}
	if m, ok := MountOf(ms, "/tmp/berthcsi-1/pods/v/mount/f"); !ok || m.FSType != "fuse.berth-csi" {
		t.Fatalf("volume: %+v", m)
	}
	if m, _ := MountOf(ms, "/tmp/berthcsi-1/pods/v/mountx"); m.FSType != "ext4" {
		t.Fatalf("a sibling with a longer name is not under the mount: %+v", m)
	}
}

func TestParseCounters(t *testing.T) {
	text := `# TYPE berth_csi_volume_read_bytes_total counter
berth_csi_volume_read_bytes_total{volume="vol-a.n"} 1.5e+09
berth_csi_volume_read_bytes_total{volume="vol-b.n"} 7
berth_csi_volume_written_bytes_total{volume="vol-a.n"} 0
`
	if v, ok := ParseVolumeCounter(text, "berth_csi_volume_read_bytes_total", "vol-a.n"); !ok || v != 1.5e9 {
		t.Fatalf("read a: %v %v", v, ok)
	}
	if _, ok := ParseVolumeCounter(text, "berth_csi_volume_written_bytes_total", "vol-b.n"); ok {
		t.Fatal("written b is absent")
	}
	if r, w, ok := ParseBlockStat("  100 0 2048 10 50 0 4096 20 0 30 30 0 0 0 0 0 0\n"); !ok || r != 2048*512 || w != 4096*512 {
		t.Fatalf("block stat: %d %d %v", r, w, ok)
	}
}

func TestInitReply(t *testing.T) {
	log := `mountDirect: calling syscall.Mount(...)
rx 2: INIT n0 {7.45 Ra 131072 ASYNC_READ,PASSTHROUGH,REQUEST_TIMEOUT} p0
tx 2:     OK, {7.28 Ra 131072 ASYNC_READ,BIG_WRITES,MAX_PAGES 0/0 Wr 131072 Tg 0 MaxPages 32 MaxStack 1}
rx 4: LOOKUP n1 ".go-fuse-epoll-hack" p4236
`
	got := initReply(log)
	if got != "tx 2: OK, {7.28 Ra 131072 ASYNC_READ,BIG_WRITES,MAX_PAGES 0/0 Wr 131072 Tg 0 MaxPages 32 MaxStack 1}" {
		t.Fatalf("initReply = %q", got)
	}
	if initReply("nothing") != "" {
		t.Fatal("no INIT: want empty")
	}
}

// sampleReport has every job on every target, two repeats, with berth at
// a fixed fraction of native and the anchor at another.
func sampleReport(berth, anchor map[string]float64) *Report {
	r := &Report{Mode: "quick (smoke)", Jobs: Jobs(),
		Params: Params{FileBytes: 256 << 20, VolumeBytes: 4 << 30, RuntimeSeconds: 3, Repeats: 2, IOEngine: "io_uring",
			IODepth: 16, RSSVolumes: 20, RSSVolumeBytes: 64 << 20, SettleSeconds: 2, RSSSamples: 3}}
	for _, name := range TargetNames {
		r.Targets = append(r.Targets, &Target{Name: name, Description: name})
	}
	for rep := 0; rep < 2; rep++ {
		for _, j := range r.Jobs {
			base := 1000.0 + float64(rep)*10
			for _, name := range TargetNames {
				f := 1.0
				switch name {
				case Berth:
					f = berth[j.Class]
				case Anchor:
					f = anchor[j.Class]
				}
				s := Sample{Job: j.ID, Target: name, Repeat: rep}
				s.IOPS = base * f
				s.BWBytes = base * f * (1 << 20)
				s.IOBytes, s.RuntimeMs = 1<<30, 3000
				s.DeviceReadBytes = 1 << 29
				if name == Berth {
					rd, wr := 0.0, float64(3<<20)
					s.FUSEReadBytes, s.FUSEWrittenBytes = &rd, &wr
				}
				r.Samples = append(r.Samples, s)
			}
		}
	}
	r.Memory = &Memory{PID: 1, Volumes: 20,
		Baseline: crilat.MemReading{VmRSSKiB: 15000, SamplesKiB: []int64{14900, 15000, 15100}},
		Loaded:   crilat.MemReading{VmRSSKiB: 23000, SamplesKiB: []int64{23000, 23000, 23100}}}
	return r
}

func TestFinalizeTargets(t *testing.T) {
	r := sampleReport(
		map[string]float64{ClassSequential: 0.95, ClassRandRead: 0.80, ClassRandWrite: 0.55},
		map[string]float64{ClassSequential: 0.70, ClassRandRead: 0.50, ClassRandWrite: 0.40})
	r.Finalize()
	if len(r.Ratios) != 8 || len(r.Summary) != 24 {
		t.Fatalf("%d ratios, %d summaries", len(r.Ratios), len(r.Summary))
	}
	for _, ra := range r.Ratios {
		switch ra.Class {
		case ClassSequential:
			// 0.95 ≥ 0.90; anchor at 0.70 is above 0.6, so no anchor rule.
			if ra.Result != "target met" || ra.AnchorRule {
				t.Errorf("%s: %+v", ra.Job, ra)
			}
		case ClassRandRead:
			// 0.80 < 0.85; anchor at 0.50: berth ÷ anchor 1.6 ≥ 1.5.
			if ra.Result != "target missed" || !ra.AnchorRule || strings.Contains(ra.Why, "anchor") {
				t.Errorf("%s: %+v", ra.Job, ra)
			}
		case ClassRandWrite:
			// 0.55 ≥ 0.50 but ÷ anchor 1.375 < 1.5 with the anchor at 0.40.
			if ra.Result != "target missed" || !strings.Contains(ra.Why, "berth ÷ anchor 1.38 < 1.5") {
				t.Errorf("%s: %+v", ra.Job, ra)
			}
		}
		if math.Abs(ra.BerthAnchor-ra.BerthNative/ra.AnchorNative) > 1e-9 {
			t.Errorf("%s: inconsistent ratios %+v", ra.Job, ra)
		}
		if ra.Noise != "ranges overlap" && ra.Noise != "ranges apart" {
			t.Errorf("%s: noise %q", ra.Job, ra.Noise)
		}
	}
	if got := r.Memory.PerVolumeKiB(); got != 400 {
		t.Fatalf("per volume %v KiB, want 400", got)
	}
	s, ok := r.summary("seq-read buffered", Berth)
	if !ok || s.N != 2 || s.Median != 0.95*1005 || s.FUSEReadMiBps != 0 || s.FUSEWrittenMiBps != 1 || s.DeviceShare != 0.5 {
		t.Fatalf("summary %+v", s)
	}
}

func TestFailedAndSkipped(t *testing.T) {
	r := sampleReport(map[string]float64{ClassSequential: 1, ClassRandRead: 1, ClassRandWrite: 1},
		map[string]float64{ClassSequential: 1, ClassRandRead: 1, ClassRandWrite: 1})
	// Every berth run of one job fails; the anchor is not measured at all.
	var kept []Sample
	for _, s := range r.Samples {
		if s.Target == Anchor {
			continue
		}
		if s.Target == Berth && s.Job == "rand-write direct" {
			s.Error = "fio: exit status 1: fio: pid=1, err=22/file:io_u.c:1889, func=io_u error, error=Invalid argument"
			s.FioResult = FioResult{}
		}
		kept = append(kept, s)
	}
	r.Samples = kept
	r.Target(Anchor).Skipped = "could not mount"
	r.Finalize()
	for _, ra := range r.Ratios {
		if ra.Job == "rand-write direct" {
			if ra.Result != "n/a" || !math.IsNaN(ra.BerthNative) {
				t.Errorf("failed job: %+v", ra)
			}
			continue
		}
		if ra.Result != "target met" || !strings.Contains(ra.Why, "anchor not measured") {
			t.Errorf("%s: %+v", ra.Job, ra)
		}
	}
	md := Markdown(r)
	for _, want := range []string{"## Errors", "err=22", "**not measured**: could not mount", "n/a"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

func TestOutputsRoundTrip(t *testing.T) {
	r := sampleReport(map[string]float64{ClassSequential: 0.95, ClassRandRead: 0.9, ClassRandWrite: 0.3},
		map[string]float64{ClassSequential: 0.5, ClassRandRead: 0.1, ClassRandWrite: 0.1})
	r.Anchor = AnchorCheck{PassthroughOff: true, Check: "refused.", Control: "accepted.", InitFlags: "tx 2: OK, {7.28 ASYNC_READ}"}
	r.Finalize()
	dir := t.TempDir()
	if err := WriteOutputs(dir, r); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(filepath.Join(dir, "csi.json"))
	if err != nil {
		t.Fatal(err)
	}
	back.Finalize()
	if Markdown(back) != Markdown(r) {
		t.Fatal("csi.md differs after a JSON round trip")
	}
	md := Markdown(r)
	for _, want := range []string{"| seq-write buffered | 1005 MiB/s | 955 MiB/s | 502 MiB/s | 0.95 | 0.50 | 1.90 | ≥ 0.90, ÷ anchor ≥ 1.5 | target met |",
		"**target missed**", "**Per mounted volume: 400 KiB**", "passthrough is off: **verified**", "— no PASSTHROUGH",
		"csi-ratio.svg", "csi-seq.svg", "csi-random.svg", "csi-rss.svg"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for name, svg := range map[string][]byte{"ratio": RatioChart(r), "seq": ValueChart(r, "MiB/s"),
		"random": ValueChart(r, "IOPS"), "rss": MemoryChart(r)} {
		if err := xml.Unmarshal(svg, new(struct{})); err != nil {
			t.Errorf("%s chart is not well-formed XML: %v", name, err)
		}
		if bytes.Contains(svg, []byte("NaN")) {
			t.Errorf("%s chart prints NaN", name)
		}
	}
}
