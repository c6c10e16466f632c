package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestSpecName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[It] [sig-node] Pods should get a host IP [NodeConformance] [Conformance] [sig-node, NodeConformance, Conformance]",
			"[sig-node] Pods should get a host IP [NodeConformance] [Conformance]"},
		{"[It] [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]",
			"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]"},
		// a single label that duplicates a tag in the text is ginkgo's
		{"[It] [sig-node] Pods should be updated [sig-node]", "[sig-node] Pods should be updated"},
		// a bracketed word that is part of the text stays
		{"[It] [sig-storage] In-tree Volumes [Driver: local] should work [LinuxOnly]",
			"[sig-storage] In-tree Volumes [Driver: local] should work [LinuxOnly]"},
		{"[SynchronizedBeforeSuite]", "[SynchronizedBeforeSuite]"},
	} {
		if got := specName(tc.in); got != tc.want {
			t.Errorf("specName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

const sampleJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="1" errors="0" failures="1" time="10">
  <testsuite name="Kubernetes e2e suite" tests="5" skipped="2" failures="1" time="10">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1.5"></testcase>
    <testcase name="[It] [sig-node] Pods should get a host IP [Conformance] [sig-node, Conformance]" classname="Kubernetes e2e suite" status="passed" time="4"></testcase>
    <testcase name="[It] [sig-node] Pods should be slow [Slow] [sig-node, Slow]" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-node] Pods should exec [sig-node]" classname="Kubernetes e2e suite" status="failed" time="3">
      <failure message="boom" type="failed">[FAILED] exit code 137
In [It] at: pods.go:1</failure>
    </testcase>
    <testcase name="[It] [sig-node] Pods should need a driver [sig-node]" classname="Kubernetes e2e suite" status="skipped" time="0.1">
      <skipped message="skipped - Driver does not support block"></skipped>
    </testcase>
    <testcase name="[It] [sig-apps] Deployment should work [sig-apps]" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>`

func TestParseAndClassify(t *testing.T) {
	specs, err := parseJUnit(strings.NewReader(sampleJUnit))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseRules(strings.NewReader("# comment\n*\t\\[Slow\\]\tslow\nnet,pods\tneed a driver\tnot this one\nnet\tget a host\tnot in pods\n"))
	if err != nil {
		t.Fatal(err)
	}
	run := Run{Subset: "pods", Focus: regexp.MustCompile(`\[sig-node\] Pods `), Skip: regexp.MustCompile(`\[Slow\]`)}
	want := map[string][2]string{
		"[SynchronizedBeforeSuite]":                          {"", ""},
		"[sig-node] Pods should get a host IP [Conformance]": {"passed", ""},
		"[sig-node] Pods should be slow [Slow]":              {"skipped", "slow"},
		"[sig-node] Pods should exec":                        {"failed", ""},
		// not in the run's --skip: the suite's own message, not the rule
		"[sig-node] Pods should need a driver": {"skipped", "suite: Driver does not support block"},
		"[sig-apps] Deployment should work":    {"", ""},
	}
	if len(specs) != len(want) {
		t.Fatalf("parsed %d specs, want %d: %+v", len(specs), len(want), specs)
	}
	for _, sp := range specs {
		w, ok := want[sp.Name]
		if !ok {
			t.Errorf("unexpected spec name %q", sp.Name)
			continue
		}
		st, reason := classify(run, sp, rules)
		if st != w[0] || reason != w[1] {
			t.Errorf("classify(%q) = %q, %q; want %q, %q", sp.Name, st, reason, w[0], w[1])
		}
		if sp.Name == "[sig-node] Pods should exec" && !strings.Contains(sp.Message, "exit code 137") {
			t.Errorf("failure message %q lacks the failure text", sp.Message)
		}
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"two fields", "*\t\\[Slow\\]\n"},
		{"bad regexp", "*\t[\treason\n"},
	} {
		if _, err := parseRules(strings.NewReader(tc.in)); err == nil {
			t.Errorf("%s: parseRules accepted %q", tc.name, tc.in)
		}
	}
}

// TestBuildSideBySide runs the whole report over two clusters' results on
// disk: counts per cluster, the berth-only failure, and skips merged across
// clusters.
func TestBuildSideBySide(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	refJUnit := strings.Replace(sampleJUnit, `status="failed" time="3">
      <failure message="boom" type="failed">[FAILED] exit code 137
In [It] at: pods.go:1</failure>`, `status="passed" time="3">`, 1)
	for ctx, j := range map[string]string{"kind-berth": sampleJUnit, "kind-ref": refJUnit} {
		recipe := "berth"
		if ctx == "kind-ref" {
			recipe = "reference"
		}
		write(filepath.Join(dir, ctx, "recipe"), recipe+"\n")
		write(filepath.Join(dir, ctx, "pods", "junit.xml"), j)
		write(filepath.Join(dir, ctx, "pods", "focus"), `\[sig-node\] Pods `)
		write(filepath.Join(dir, ctx, "pods", "skip"), `\[Slow\]`)
		write(filepath.Join(dir, ctx, "pods", "seconds"), "75")
	}
	rulesPath := filepath.Join(dir, "skips.tsv")
	write(rulesPath, "*\t\\[Slow\\]\tslow\n")
	md, js := filepath.Join(dir, "out", "upstream.md"), filepath.Join(dir, "out", "upstream.json")
	if _, err := run(dir, rulesPath, md, js, "ran twice"); err != nil {
		t.Fatal(err)
	}
	runs, err := loadRuns(dir)
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := parseRules(strings.NewReader("*\t\\[Slow\\]\tslow\n"))
	rep, err := build(runs, rules)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Clusters) != 2 || rep.Clusters[0].Recipe != "berth" {
		t.Fatalf("clusters %+v, want berth first of 2", rep.Clusters)
	}
	for ctx, want := range map[string]Counts{
		"kind-berth": {Selected: 4, Passed: 1, Failed: 1, Skipped: 2, Seconds: 75},
		"kind-ref":   {Selected: 4, Passed: 2, Failed: 0, Skipped: 2, Seconds: 75},
	} {
		if got := rep.Subsets[0].Counts[ctx]; got != want {
			t.Errorf("%s counts %+v, want %+v", ctx, got, want)
		}
	}
	if len(rep.BerthOnlyFailures) != 1 || rep.BerthOnlyFailures[0].Spec != "[sig-node] Pods should exec" {
		t.Errorf("berth-only failures %+v", rep.BerthOnlyFailures)
	}
	if bad := rep.Unexcused(); len(bad) != 1 || bad[0].Context != "kind-berth" {
		t.Errorf("unexcused failures %+v, want the berth one", bad)
	}
	if len(rep.Skips) != 2 || len(rep.Skips[0].Contexts) != 2 {
		t.Errorf("skips %+v: want 2, each on both clusters", rep.Skips)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| pods | **1** / 1 / 2 of 4 (1m15s) | **2** / 0 / 2 of 4 (1m15s) |", "exit code 137", "slow (1)", "## Notes on this run\n\nran twice"} {
		if !strings.Contains(string(b), s) {
			t.Errorf("markdown lacks %q:\n%s", s, b)
		}
	}
}

func TestUnexcused(t *testing.T) {
	clusters := []Cluster{{"kind-berth", "berth"}, {"kind-ref", "reference"}}
	for _, tc := range []struct {
		name     string
		failures []Failure
		want     int
	}{
		{"fails on both: excused", []Failure{{Context: "kind-berth", Subset: "net", Spec: "a"}, {Context: "kind-ref", Subset: "net", Spec: "a"}}, 0},
		{"fails on berth only", []Failure{{Context: "kind-berth", Subset: "net", Spec: "a"}}, 1},
		{"fails on reference only", []Failure{{Context: "kind-ref", Subset: "net", Spec: "a"}}, 0},
		{"same spec, other subset on reference", []Failure{{Context: "kind-berth", Subset: "net", Spec: "a"}, {Context: "kind-ref", Subset: "pods", Spec: "a"}}, 1},
	} {
		rep := &Report{Clusters: clusters, Failures: tc.failures}
		if got := len(rep.Unexcused()); got != tc.want {
			t.Errorf("%s: %d unexcused, want %d", tc.name, got, tc.want)
		}
	}
}
