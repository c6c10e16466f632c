package kindperf

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berthdev/berth/test/perf/csifio"
)

// DefaultParams are the full run's sizes (about 30 minutes on two cores):
// iperf3 as the network suite runs it (3 × 10 s), fio as the CSI suite
// runs it (1 GiB file, 2 × 20 s per job and target, io_uring at QD16), 30
// pods per cluster and mode.
func DefaultParams() Params {
	return Params{
		Parts:          append([]string(nil), AllParts...),
		IperfSeconds:   10,
		Repeats:        3,
		Streams:        []int{1, 4},
		ShapedRates:    []string{"100M", "1G"},
		ShapedStreams:  []int{1, 4},
		PingIntervalMs: 100,
		IdlePings:      10,
		Fio:            csifio.Params{FileBytes: 1 << 30, RuntimeSeconds: 20, Repeats: 2, IOEngine: "io_uring", IODepth: 16},
		PVCBytes:       2 << 30,
		StorageClass:   "berth",
		Pods:           30,
	}
}

// QuickParams are a smoke run's (a few minutes): one short sample of
// everything, small fio files, 5 pods.
func QuickParams() Params {
	p := DefaultParams()
	p.IperfSeconds, p.Repeats, p.IdlePings = 3, 1, 5
	p.Fio.FileBytes, p.Fio.RuntimeSeconds, p.Fio.Repeats = 64<<20, 2, 1
	p.PVCBytes = 256 << 20
	p.Pods = 5
	return p
}

// ParamsFromEnv reads the run's sizes from the environment (go test passes
// no flags to a test; hack/perf-kind.sh turns its flags into these):
//
//	KIND_PERF_QUICK=1          QuickParams instead of DefaultParams
//	KIND_PERF_PARTS            comma-separated subset of net,shaped,fio,podstart
//	KIND_PERF_SECONDS          iperf3 seconds per run (2–120)
//	KIND_PERF_REPEATS          iperf3 runs per case (1–20)
//	KIND_PERF_PODS             pods per cluster and mode (2–200)
//	KIND_PERF_FIO_RUNTIME      fio seconds per run (1–600)
//	KIND_PERF_FIO_REPEATS      fio runs per job and target (1–20)
//	KIND_PERF_FIO_FILE_MIB     fio file size (16–4096; the PVC is twice that)
//	KIND_PERF_STORAGE_CLASS    the PVC's StorageClass (default berth)
//
// It returns the mode string for the report.
func ParamsFromEnv(getenv func(string) string) (Params, string, error) {
	p, mode := DefaultParams(), "full"
	if getenv("KIND_PERF_QUICK") != "" {
		p, mode = QuickParams(), "quick (smoke)"
	}
	custom := false
	if v := getenv("KIND_PERF_PARTS"); v != "" {
		p.Parts = nil
		for _, x := range strings.Split(v, ",") {
			x = strings.TrimSpace(x)
			ok := false
			for _, a := range AllParts {
				ok = ok || a == x
			}
			if !ok {
				return p, "", fmt.Errorf("KIND_PERF_PARTS: unknown part %q (want %s)", x, strings.Join(AllParts, ","))
			}
			if !p.Has(x) {
				p.Parts = append(p.Parts, x)
			}
		}
		custom = true
	}
	for _, o := range []struct {
		env      string
		dst      *int
		min, max int
	}{
		{"KIND_PERF_SECONDS", &p.IperfSeconds, 2, 120},
		{"KIND_PERF_REPEATS", &p.Repeats, 1, 20},
		{"KIND_PERF_PODS", &p.Pods, 2, 200},
		{"KIND_PERF_FIO_RUNTIME", &p.Fio.RuntimeSeconds, 1, 600},
		{"KIND_PERF_FIO_REPEATS", &p.Fio.Repeats, 1, 20},
	} {
		v := getenv(o.env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < o.min || n > o.max {
			return p, "", fmt.Errorf("%s=%q: want a whole number from %d to %d", o.env, v, o.min, o.max)
		}
		*o.dst, custom = n, true
	}
	if v := getenv("KIND_PERF_FIO_FILE_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 16 || n > 4096 {
			return p, "", fmt.Errorf("KIND_PERF_FIO_FILE_MIB=%q: want a whole number from 16 to 4096", v)
		}
		p.Fio.FileBytes, p.PVCBytes, custom = int64(n)<<20, 2*int64(n)<<20, true
	}
	if v := getenv("KIND_PERF_STORAGE_CLASS"); v != "" {
		p.StorageClass, custom = v, true
	}
	if custom {
		mode += ", custom"
	}
	return p, mode, nil
}

// RateMbps reads a bandwidth annotation's value as kubelet does (a
// resource quantity in bit/s: "100M" is 100 Mbit/s).
func RateMbps(v string) (float64, error) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", v, err)
	}
	return q.AsApproximateFloat64() / 1e6, nil
}
