// Command report summarises hack/kind/e2e-upstream.sh's runs of the upstream
// Kubernetes e2e suite into test/e2e/results/upstream.{md,json}: pass, fail
// and skip counts per subset for every cluster side by side, every failure
// with its error, the specs that fail on a berth cluster but pass on the
// reference cluster, and every skip with its reason.
//
// Its input is e2e-upstream.sh's results directory:
//
//	<results>/<context>/recipe             berth or reference
//	<results>/<context>/<subset>/junit.xml ginkgo's JUnit report
//	<results>/<context>/<subset>/focus     the --focus regex of the run
//	<results>/<context>/<subset>/skip      the --skip regex of the run
//	<results>/<context>/<subset>/seconds   wall time of the run
//	<results>/<context>/<subset>/rc        ginkgo's exit status
//
// and the skip rules (test/e2e/upstream/skips.tsv), which give each
// left-out spec its reason.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	results := flag.String("results", "_output/e2e-upstream/results", "results directory of hack/kind/e2e-upstream.sh")
	skips := flag.String("skips", "test/e2e/upstream/skips.tsv", "skip rules")
	mdPath := flag.String("md", "test/e2e/results/upstream.md", "Markdown report to write")
	jsonPath := flag.String("json", "test/e2e/results/upstream.json", "JSON report to write")
	notes := flag.String("notes", "", "Markdown file whose text goes into the report under \"Notes on this run\"")
	check := flag.Bool("check", false, "exit 3 when a spec failed on a berth cluster and did not also fail on a reference cluster")
	flag.Parse()
	var noteText string
	if *notes != "" {
		b, err := os.ReadFile(*notes)
		if err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		noteText = string(b)
	}
	rep, err := run(*results, *skips, *mdPath, *jsonPath, noteText)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if *check {
		if bad := rep.Unexcused(); len(bad) > 0 {
			fmt.Fprintf(os.Stderr, "report: %d spec(s) failed on berth without failing on the reference cluster:\n", len(bad))
			for _, f := range bad {
				fmt.Fprintf(os.Stderr, "  %s [%s] %s\n", f.Context, f.Subset, f.Spec)
			}
			os.Exit(3)
		}
	}
}

// Unexcused lists the failures on berth clusters that no reference cluster
// shares: those that passed there, were skipped there, or were not run
// there. A spec that fails on both is the suite's or the environment's
// problem, not berth's.
func (rep *Report) Unexcused() []Failure {
	recipe := map[string]string{}
	for _, c := range rep.Clusters {
		recipe[c.Context] = c.Recipe
	}
	refFailed := map[[2]string]bool{}
	for _, f := range rep.Failures {
		if recipe[f.Context] == "reference" {
			refFailed[[2]string{f.Subset, f.Spec}] = true
		}
	}
	var bad []Failure
	for _, f := range rep.Failures {
		if recipe[f.Context] == "berth" && !refFailed[[2]string{f.Subset, f.Spec}] {
			bad = append(bad, f)
		}
	}
	return bad
}

func run(results, skipsPath, mdPath, jsonPath, notes string) (*Report, error) {
	f, err := os.Open(skipsPath)
	if err != nil {
		return nil, err
	}
	rules, err := parseRules(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	runs, err := loadRuns(results)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("no runs under %s", results)
	}
	rep, err := build(runs, rules)
	if err != nil {
		return nil, err
	}
	rep.Notes = strings.TrimSpace(notes)
	for _, p := range []string{mdPath, jsonPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
		return nil, err
	}
	return rep, os.WriteFile(mdPath, []byte(renderMarkdown(rep)), 0o644)
}

// Rule is one line of skips.tsv.
type Rule struct {
	Subset string // subset name, comma-separated names, or "*"
	Re     *regexp.Regexp
	Reason string
}

func (r Rule) applies(subset string) bool {
	if r.Subset == "*" {
		return true
	}
	for _, s := range strings.Split(r.Subset, ",") {
		if s == subset {
			return true
		}
	}
	return false
}

func parseRules(r io.Reader) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("skip rules line %d: want SUBSET<TAB>REGEX<TAB>REASON", n)
		}
		re, err := regexp.Compile(f[1])
		if err != nil {
			return nil, fmt.Errorf("skip rules line %d: %w", n, err)
		}
		rules = append(rules, Rule{Subset: f[0], Re: re, Reason: f[2]})
	}
	return rules, sc.Err()
}

// Run is one subset run against one cluster.
type Run struct {
	Context, Recipe, Subset string
	Focus, Skip             *regexp.Regexp
	Seconds, RC             int
	Specs                   []Spec
}

func loadRuns(dir string) ([]Run, error) {
	ctxs, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var runs []Run
	for _, c := range ctxs {
		if !c.IsDir() {
			continue
		}
		cdir := filepath.Join(dir, c.Name())
		recipe := readTrim(filepath.Join(cdir, "recipe"))
		subs, err := os.ReadDir(cdir)
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			sdir := filepath.Join(cdir, s.Name())
			if !s.IsDir() {
				continue
			}
			jf, err := os.Open(filepath.Join(sdir, "junit.xml"))
			if errors.Is(err, os.ErrNotExist) {
				continue // run did not get as far as a report
			} else if err != nil {
				return nil, err
			}
			specs, err := parseJUnit(jf)
			jf.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sdir, err)
			}
			run := Run{Context: c.Name(), Recipe: recipe, Subset: s.Name(), Specs: specs}
			// regexes keep their spaces ("\[sig-node\] Pods " ends in one)
			if run.Focus, err = regexp.Compile(readLine(filepath.Join(sdir, "focus"))); err != nil {
				return nil, fmt.Errorf("%s focus: %w", sdir, err)
			}
			if sk := readLine(filepath.Join(sdir, "skip")); sk != "" {
				if run.Skip, err = regexp.Compile(sk); err != nil {
					return nil, fmt.Errorf("%s skip: %w", sdir, err)
				}
			}
			run.Seconds, _ = strconv.Atoi(readTrim(filepath.Join(sdir, "seconds")))
			run.RC, _ = strconv.Atoi(readTrim(filepath.Join(sdir, "rc")))
			runs = append(runs, run)
		}
	}
	return runs, nil
}

// readLine reads a file holding one line, without its line end.
func readLine(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimRight(string(b), "\r\n")
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// Report is upstream.json.
type Report struct {
	Notes    string         `json:"notes,omitempty"` // how this run was made
	Clusters []Cluster      `json:"clusters"`
	Subsets  []SubsetResult `json:"subsets"`
	// BerthOnlyFailures are specs that failed on a berth cluster and
	// passed on a reference cluster.
	BerthOnlyFailures []Failure `json:"berth_only_failures"`
	Failures          []Failure `json:"failures"`
	// Skips: every spec of a subset that did not run, with its reason.
	Skips []Skip `json:"skips"`
}

type Cluster struct {
	Context string `json:"context"`
	Recipe  string `json:"recipe"`
}

type SubsetResult struct {
	Name   string            `json:"name"`
	Focus  string            `json:"focus"`
	Counts map[string]Counts `json:"counts"` // by context
}

type Counts struct {
	Selected int `json:"selected"` // specs the focus matches
	Passed   int `json:"passed"`
	Failed   int `json:"failed"`
	Skipped  int `json:"skipped"` // left out by a rule or skipped by the suite
	Seconds  int `json:"seconds"`
	RC       int `json:"rc"`
}

type Failure struct {
	Context string `json:"context"`
	Subset  string `json:"subset"`
	Spec    string `json:"spec"`
	Error   string `json:"error"`
}

type Skip struct {
	Subset   string   `json:"subset"`
	Spec     string   `json:"spec"`
	Reason   string   `json:"reason"`
	Contexts []string `json:"contexts"`
}

// classify says what happened to a spec of a run: "passed", "failed",
// "skipped" (with the reason) or "" when the spec is not in the subset.
func classify(run Run, sp Spec, rules []Rule) (status, reason string) {
	if !run.Focus.MatchString(sp.Name) {
		return "", ""
	}
	if run.Skip != nil && run.Skip.MatchString(sp.Name) {
		for _, r := range rules {
			if r.applies(run.Subset) && r.Re.MatchString(sp.Name) {
				return "skipped", r.Reason
			}
		}
		return "skipped", "run by another subset (" + run.Skip.String() + ")"
	}
	if sp.Status == "skipped" {
		msg := strings.TrimSpace(strings.TrimPrefix(sp.Message, "skipped -"))
		if msg == "" || msg == "skipped" {
			msg = "skipped by ginkgo without a message (pending or filtered)"
		}
		return "skipped", "suite: " + firstLine(msg)
	}
	return sp.Status, ""
}

func build(runs []Run, rules []Rule) (*Report, error) {
	rep := &Report{}
	seenCtx := map[string]bool{}
	subsetIdx := map[string]int{}
	type key struct{ subset, spec string }
	skips := map[key]*Skip{}
	status := map[key]map[string]string{} // -> context -> status
	var skipOrder []key
	sort.SliceStable(runs, func(i, j int) bool {
		if runs[i].Recipe != runs[j].Recipe {
			return runs[i].Recipe == "berth" // berth first
		}
		return runs[i].Context < runs[j].Context
	})
	for _, run := range runs {
		if !seenCtx[run.Context] {
			seenCtx[run.Context] = true
			rep.Clusters = append(rep.Clusters, Cluster{Context: run.Context, Recipe: run.Recipe})
		}
		i, ok := subsetIdx[run.Subset]
		if !ok {
			i = len(rep.Subsets)
			subsetIdx[run.Subset] = i
			rep.Subsets = append(rep.Subsets, SubsetResult{Name: run.Subset, Focus: run.Focus.String(), Counts: map[string]Counts{}})
		}
		c := Counts{Seconds: run.Seconds, RC: run.RC}
		for _, sp := range run.Specs {
			st, reason := classify(run, sp, rules)
			if st == "" {
				continue
			}
			c.Selected++
			k := key{run.Subset, sp.Name}
			if status[k] == nil {
				status[k] = map[string]string{}
			}
			status[k][run.Context] = st
			switch st {
			case "passed":
				c.Passed++
			case "failed":
				c.Failed++
				rep.Failures = append(rep.Failures, Failure{Context: run.Context, Subset: run.Subset, Spec: sp.Name, Error: sp.Message})
			case "skipped":
				c.Skipped++
				sk, ok := skips[k]
				if !ok || sk.Reason != reason {
					if ok { // a different reason on another cluster: its own entry
						k.spec += "\x00" + run.Context
					}
					sk = &Skip{Subset: run.Subset, Spec: sp.Name, Reason: reason}
					skips[k] = sk
					skipOrder = append(skipOrder, k)
				}
				sk.Contexts = append(sk.Contexts, run.Context)
			}
		}
		rep.Subsets[i].Counts[run.Context] = c
	}
	recipe := map[string]string{}
	for _, c := range rep.Clusters {
		recipe[c.Context] = c.Recipe
	}
	for _, f := range rep.Failures {
		if recipe[f.Context] != "berth" {
			continue
		}
		for ctx, st := range status[key{f.Subset, f.Spec}] {
			if recipe[ctx] == "reference" && st == "passed" {
				rep.BerthOnlyFailures = append(rep.BerthOnlyFailures, f)
				break
			}
		}
	}
	for _, k := range skipOrder {
		rep.Skips = append(rep.Skips, *skips[k])
	}
	return rep, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
