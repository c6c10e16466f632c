package csi_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"

	"github.com/berthdev/berth/test/crienv"
	"github.com/berthdev/berth/test/csienv"
)

// sanityReport collects csi-sanity's outcome for the summary the test
// writes under _output/csi-sanity.
type sanityReport struct {
	Passed, Failed, Skipped, Pending int
	Skips                            map[string]string // spec → reason
	Failures                         []string
}

var report = sanityReport{Skips: map[string]string{}}

var _ = ginkgo.ReportAfterEach(func(r ginkgo.SpecReport) {
	name := r.FullText()
	switch {
	case r.State == types.SpecStatePassed:
		report.Passed++
	case r.State == types.SpecStateSkipped:
		report.Skipped++
		report.Skips[name] = strings.TrimSpace(r.Failure.Message)
	case r.State == types.SpecStatePending:
		report.Pending++
	case r.State.Is(types.SpecStateFailureStates):
		report.Failed++
		report.Failures = append(report.Failures, name+": "+r.Failure.Message)
	}
})

// TestSanity runs kubernetes-csi/csi-test v5's sanity suite against a real
// berth-csi in mode all, with real FUSE mounts for stage and publish.
func TestSanity(t *testing.T) {
	p := csienv.Start(t)
	cfg := sanity.NewTestConfig()
	cfg.Address = p.Endpoint
	cfg.TargetPath = filepath.Join(p.Dir, "sanity-target")
	cfg.StagingPath = filepath.Join(p.Dir, "sanity-staging")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeExpandSize = 128 << 20
	cfg.IdempotentCount = 3
	cfg.TestNodeVolumeAttachLimit = true
	sanity.Test(t, cfg)

	dir := filepath.Join(crienv.RepoRoot(t), "_output", "csi-sanity")
	os.MkdirAll(dir, 0o755)
	b, _ := json.MarshalIndent(report, "", "  ")
	os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644)
	var skips []string
	for name, why := range report.Skips {
		skips = append(skips, fmt.Sprintf("- %s — %s", name, why))
	}
	sort.Strings(skips)
	md := fmt.Sprintf("# csi-sanity v5.6.0 against berth-csi\n\nEmbedded in `make test` (test/integration/csi, TestSanity): berth-csi in mode all, real FUSE mounts for stage and publish.\n\n"+
		"**%d passed, %d failed, %d skipped, %d pending.**\n\nSkipped specs (each for a capability berth-csi does not advertise; the reason is csi-sanity's):\n\n%s\n",
		report.Passed, report.Failed, report.Skipped, report.Pending, strings.Join(skips, "\n"))
	if len(report.Failures) > 0 {
		md += "\nFailures:\n\n- " + strings.Join(report.Failures, "\n- ") + "\n"
	}
	os.WriteFile(filepath.Join(dir, "report.md"), []byte(md), 0o644)
	t.Logf("csi-sanity: %d passed, %d failed, %d skipped, %d pending", report.Passed, report.Failed, report.Skipped, report.Pending)
	t.Logf("skipped specs:\n%s", strings.Join(skips, "\n"))
}
