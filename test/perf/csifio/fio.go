package csifio

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Job is one fio workload of the matrix.
type Job struct {
	ID      string `json:"id"`      // "seq-write buffered"
	Pattern string `json:"pattern"` // PatternSeqWrite, ...
	RW      string `json:"rw"`      // fio --rw
	BS      string `json:"bs"`      // fio --bs
	Direct  bool   `json:"direct"`  // O_DIRECT
	Class   string `json:"class"`   // ClassSequential, ClassRandRead, ClassRandWrite
	Unit    string `json:"unit"`    // what the ratio compares: "MiB/s" or "IOPS"
}

// Patterns, in report order.
const (
	PatternSeqWrite  = "seq-write"
	PatternSeqRead   = "seq-read"
	PatternRandRead  = "rand-read"
	PatternRandWrite = "rand-write"
)

// Classes of job, each with its own target.
const (
	ClassSequential = "sequential"
	ClassRandRead   = "random read"
	ClassRandWrite  = "random write"
)

// Jobs is the matrix: sequential 1 MiB write and read, random
// 4 KiB read and write, each buffered and with O_DIRECT.
func Jobs() []Job {
	var out []Job
	for _, direct := range []bool{false, true} {
		for _, p := range []struct{ pattern, rw, bs, class, unit string }{
			{PatternSeqWrite, "write", "1M", ClassSequential, "MiB/s"},
			{PatternSeqRead, "read", "1M", ClassSequential, "MiB/s"},
			{PatternRandRead, "randread", "4k", ClassRandRead, "IOPS"},
			{PatternRandWrite, "randwrite", "4k", ClassRandWrite, "IOPS"},
		} {
			mode := "buffered"
			if direct {
				mode = "direct"
			}
			out = append(out, Job{ID: p.pattern + " " + mode, Pattern: p.pattern, RW: p.rw, BS: p.bs,
				Direct: direct, Class: p.class, Unit: p.unit})
		}
	}
	return out
}

// Reads reports whether the job only reads (its file must be laid out
// first).
func (j Job) Reads() bool { return j.RW == "read" || j.RW == "randread" }

// FioArgs are the fio arguments for one run of job on file (the caller
// adds --output). Every job runs time_based for the same runtime at the
// same queue depth on one file of size bytes, so the three targets see the
// same I/O. fallocate=none: the file is laid out by writing it (see
// LayoutArgs), on every target alike.
func FioArgs(j Job, p Params, file string) []string {
	return []string{
		"--name=" + strings.ReplaceAll(j.ID, " ", "-"),
		"--filename=" + file,
		"--size=" + strconv.FormatInt(p.FileBytes, 10),
		"--rw=" + j.RW,
		"--bs=" + j.BS,
		"--ioengine=" + p.IOEngine,
		"--iodepth=" + strconv.Itoa(p.IODepth),
		"--direct=" + b2s(j.Direct),
		"--runtime=" + strconv.Itoa(p.RuntimeSeconds),
		"--time_based=1",
		"--numjobs=1",
		"--fallocate=none",
		// No fadvise(DONTNEED) at start and at each wrap: on a FUSE file
		// it drops the FUSE inode's cache but not the backing file's,
		// while on the native file it drops (and for writes, starts
		// writing back) the file's own pages, so it would treat the
		// targets differently. The caller drops every cache before a run.
		"--invalidate=0",
		"--output-format=json",
	}
}

// LayoutArgs write file sequentially to its full size and fsync it: the
// untimed step before a read job.
func LayoutArgs(p Params, file string) []string {
	return []string{
		"--name=layout",
		"--filename=" + file,
		"--size=" + strconv.FormatInt(p.FileBytes, 10),
		"--rw=write",
		"--bs=1M",
		"--ioengine=psync",
		"--direct=0",
		"--fallocate=none",
		"--end_fsync=1",
		"--output-format=json",
	}
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// FioResult is what a sample keeps of fio's JSON output: the one job's
// read or write side, whichever the job does.
type FioResult struct {
	BWBytes    float64 `json:"bwBytes"` // bytes per second
	IOPS       float64 `json:"iops"`
	IOBytes    int64   `json:"ioBytes"`
	RuntimeMs  int64   `json:"runtimeMs"`
	ClatMeanUs float64 `json:"clatMeanUs"`
	ClatP50Us  float64 `json:"clatP50Us"`
	ClatP99Us  float64 `json:"clatP99Us"`
	UsrCPU     float64 `json:"usrCpuPct"` // fio's own CPU, percent of one CPU
	SysCPU     float64 `json:"sysCpuPct"`
}

// In is the run's figure in a job's unit: IOPS, else MiB/s.
func (r FioResult) In(unit string) float64 {
	if unit == "IOPS" {
		return r.IOPS
	}
	return r.BWBytes / (1 << 20)
}

type fioOutput struct {
	Version string `json:"fio version"`
	Jobs    []struct {
		Name   string  `json:"jobname"`
		Error  int     `json:"error"`
		Read   fioSide `json:"read"`
		Write  fioSide `json:"write"`
		UsrCPU float64 `json:"usr_cpu"`
		SysCPU float64 `json:"sys_cpu"`
	} `json:"jobs"`
}

type fioSide struct {
	IOBytes int64   `json:"io_bytes"`
	BWBytes float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
	Runtime int64   `json:"runtime"`
	Clat    struct {
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// ParseFio reads fio's --output-format=json for a one-job run. write says
// which side to take. fio writes a few lines of warnings before the JSON
// on some errors; those are skipped.
func ParseFio(b []byte, write bool) (FioResult, string, error) {
	s := string(b)
	if i := strings.Index(s, "{"); i > 0 {
		s = s[i:]
	}
	var o fioOutput
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		return FioResult{}, "", fmt.Errorf("fio output: %w", err)
	}
	if len(o.Jobs) != 1 {
		return FioResult{}, o.Version, fmt.Errorf("fio output has %d jobs, want 1", len(o.Jobs))
	}
	j := o.Jobs[0]
	if j.Error != 0 {
		return FioResult{}, o.Version, fmt.Errorf("fio job %s: error %d", j.Name, j.Error)
	}
	side := j.Read
	if write {
		side = j.Write
	}
	if side.IOBytes == 0 {
		return FioResult{}, o.Version, fmt.Errorf("fio job %s did no I/O", j.Name)
	}
	r := FioResult{BWBytes: side.BWBytes, IOPS: side.IOPS, IOBytes: side.IOBytes, RuntimeMs: side.Runtime,
		ClatMeanUs: side.Clat.Mean / 1000, UsrCPU: j.UsrCPU, SysCPU: j.SysCPU}
	r.ClatP50Us = side.Clat.Percentile["50.000000"] / 1000
	r.ClatP99Us = side.Clat.Percentile["99.000000"] / 1000
	return r, o.Version, nil
}
