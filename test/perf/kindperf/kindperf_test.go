package kindperf

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/test/perf/perfnet"
	"github.com/berthdev/berth/test/perf/report"
)

// TestKindPerf is the in-cluster performance suite (hack/perf-kind.sh, the
// fifth suite of make perf). It needs the berth cluster (kind-berth), the
// reference cluster (kind-ref) and the tools image loaded into both, so it
// only runs with BERTH_KIND_PERF=1; hack/perf-kind.sh provides all three.
//
// Environment: KIND_PERF_IMAGE (the tools image, required),
// KIND_PERF_BERTH_CONTEXT and KIND_PERF_REF_CONTEXT (default kind-berth and
// kind-ref), KIND_PERF_OUT (default test/perf/results), and the sizes
// ParamsFromEnv reads (KIND_PERF_QUICK=1 for a smoke run). Must run as
// root: it drops the host's page cache before every fio run.
//
// Only an environment that cannot run fails the test. Throughput, rates,
// RTTs, fio figures and latencies are reported, never asserted; a case
// that fails is recorded verbatim in the report.
func TestKindPerf(t *testing.T) {
	if os.Getenv("BERTH_KIND_PERF") == "" {
		t.Skip("set BERTH_KIND_PERF=1 (hack/perf-kind.sh, make perf) to run the in-cluster suite")
	}
	params, mode, err := ParamsFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	image := os.Getenv("KIND_PERF_IMAGE")
	if image == "" {
		t.Fatal("KIND_PERF_IMAGE is not set: hack/perf-kind.sh builds the tools image (hack/kind/perf-image.sh) and sets it")
	}
	berthCtx := envOr("KIND_PERF_BERTH_CONTEXT", "kind-berth")
	refCtx := envOr("KIND_PERF_REF_CONTEXT", "kind-ref")
	root := repoRoot(t)
	outDir := envOr("KIND_PERF_OUT", filepath.Join(root, "test", "perf", "results"))
	if params.Has(PartFio) && os.Geteuid() != 0 {
		t.Fatal("the fio part drops the host's page cache: run as root (or leave fio out with KIND_PERF_PARTS)")
	}
	// ^C or SIGTERM ends the current case; the cleanups still delete the
	// namespaces and the report of what was measured is still written.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A cleanup, registered first so it runs last: the report's cleanup
	// must still see whether a signal came.
	t.Cleanup(stop)

	t0 := time.Now()
	rep := &Report{Mode: mode, Params: params, Reproduce: reproduce(mode),
		Env: Env{Host: perfnet.CollectHost(t0, root), ToolsImage: image}}
	berth, err := Connect(ctx, Berth, berthCtx)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Connect(ctx, Ref, refCtx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Cluster{ref, berth} {
		gone, err := c.Sweep(ctx)
		if err != nil {
			t.Fatalf("%s: sweeping namespaces of an earlier run: %v", c.Context, err)
		}
		if len(gone) > 0 {
			t.Logf("%s: deleted namespaces an earlier run left: %v", c.Context, gone)
		}
	}
	rep.Env.Clusters = []ClusterEnv{ref.Env(ctx), berth.Env(ctx)}

	run := &Run{R: rep, Berth: berth, Ref: ref, Image: image, Logf: t.Logf, DropCaches: dropCaches}
	// Registered first, so it runs last: after the namespaces are gone.
	t.Cleanup(func() {
		rep.Env.End()
		rep.Env.DurationSeconds = time.Since(t0).Seconds()
		if ctx.Err() != nil {
			rep.Notes = append(rep.Notes, "The run was interrupted: what was measured before is reported, the rest is missing.")
		}
		files, err := Files(rep)
		if err != nil {
			t.Errorf("render: %v", err)
			return
		}
		if err := report.WriteFiles(outDir, files); err != nil {
			t.Errorf("write report: %v", err)
			return
		}
		t.Logf("wrote %s/kind.md (%d files) after %s", outDir, len(files), time.Since(t0).Round(time.Second))
	})
	t.Cleanup(func() {
		for _, err := range run.Cleanup() {
			t.Errorf("cleanup: %v", err)
		}
	})

	steps := []struct {
		on  bool
		run func(context.Context) error
	}{
		{params.Has(PartNet) || params.Has(PartShaped), run.Network},
		{params.Has(PartFio), run.Fio},
		{params.Has(PartPodStart), run.PodStart},
	}
	for _, s := range steps {
		if !s.on {
			continue
		}
		if err := s.run(ctx); err != nil {
			if ctx.Err() != nil {
				t.Errorf("interrupted: %v", err)
				return
			}
			t.Fatal(err)
		}
	}
	rep.Finalize()
	for _, ra := range rep.Ratios {
		t.Logf("%s: %s", ra.Measure, f2(ra.Ratio))
	}
}

// TestRender re-renders kind.md and the charts from a saved kind.json
// (KIND_PERF_RENDER=path/to/kind.json), into the same directory.
func TestRender(t *testing.T) {
	path := os.Getenv("KIND_PERF_RENDER")
	if path == "" {
		t.Skip("set KIND_PERF_RENDER=test/perf/results/kind.json to re-render a saved report")
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(repoRoot(t), path)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	files, err := Files(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := report.WriteFiles(filepath.Dir(path), files); err != nil {
		t.Fatal(err)
	}
}

// dropCaches writes back and drops the host's page cache: the kind nodes
// are containers on this kernel, so this is their page cache too.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

func reproduce(mode string) []string {
	if strings.HasPrefix(mode, "quick") {
		return []string{"sudo hack/perf-kind.sh --quick"}
	}
	return []string{"sudo hack/perf-kind.sh", "# or, as the fifth suite of all: sudo make perf"}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// repoRoot is the directory holding go.mod, from the package directory up.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}
