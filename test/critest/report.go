// Package critest runs cri-tools' conformance suite (critest) against
// berth-cri and against containerd's own CRI in the same run, and writes
// the side-by-side report under test/perf/results.
package critest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// ginkgoReport is the part of ginkgo v2's JSON report (--ginkgo.json-report)
// the summary needs.
type ginkgoReport struct {
	SuiteDescription string `json:"SuiteDescription"`
	SpecReports      []struct {
		ContainerHierarchyTexts []string `json:"ContainerHierarchyTexts"`
		LeafNodeText            string   `json:"LeafNodeText"`
		LeafNodeType            string   `json:"LeafNodeType"`
		State                   string   `json:"State"`
		RunTime                 int64    `json:"RunTime"`
		Failure                 struct {
			Message string `json:"Message"`
		} `json:"Failure"`
	} `json:"SpecReports"`
}

// Spec is one spec's outcome.
type Spec struct {
	Name    string  `json:"name"`
	State   string  `json:"state"` // passed, failed, skipped, pending, panicked, ...
	Message string  `json:"message,omitempty"`
	Seconds float64 `json:"seconds"`
}

// Summary is one critest run.
type Summary struct {
	Runtime string `json:"runtime"`
	Passed  int    `json:"passed"`
	Failed  int    `json:"failed"`
	Skipped int    `json:"skipped"`
	Specs   []Spec `json:"specs"`
}

// Parse reads a ginkgo JSON report. Only "It" specs count; suite setup
// nodes are reported only when they fail.
func Parse(runtimeName string, r io.Reader) (Summary, error) {
	var reports []ginkgoReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return Summary{}, fmt.Errorf("decode ginkgo report: %w", err)
	}
	s := Summary{Runtime: runtimeName}
	for _, rep := range reports {
		for _, sr := range rep.SpecReports {
			if sr.LeafNodeType != "It" && sr.State == "passed" {
				continue
			}
			name := strings.TrimSpace(strings.Join(append(append([]string{}, sr.ContainerHierarchyTexts...), sr.LeafNodeText), " "))
			if sr.LeafNodeType != "It" {
				name = "[" + sr.LeafNodeType + "] " + name
			}
			msg := strings.TrimSpace(sr.Failure.Message)
			if i := strings.IndexByte(msg, '\n'); i > 0 && len(msg) > 300 {
				msg = msg[:i]
			}
			if len(msg) > 300 {
				msg = msg[:300] + "…"
			}
			sp := Spec{Name: name, State: sr.State, Message: msg, Seconds: float64(sr.RunTime) / 1e9}
			switch sr.State {
			case "passed":
				s.Passed++
			case "skipped", "pending":
				s.Skipped++
			default:
				s.Failed++
			}
			s.Specs = append(s.Specs, sp)
		}
	}
	sort.Slice(s.Specs, func(i, j int) bool { return s.Specs[i].Name < s.Specs[j].Name })
	return s, nil
}

// ParseFile is Parse on a file.
func ParseFile(runtimeName, path string) (Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, err
	}
	defer f.Close()
	return Parse(runtimeName, f)
}

// Totals prints go-test-style totals.
func (s Summary) Totals() string {
	return fmt.Sprintf("%s: %d passed, %d failed, %d skipped (%d specs)", s.Runtime, s.Passed, s.Failed, s.Skipped, len(s.Specs))
}

func (s Summary) byName() map[string]Spec {
	m := map[string]Spec{}
	for _, sp := range s.Specs {
		m[sp.Name] = sp
	}
	return m
}

// Markdown renders both runs side by side: the totals, every spec whose
// outcome is not "passed" in either run, and every skip with its reason.
// extra runs (e.g. the streaming specs over websocket) are listed in the
// totals table only.
func Markdown(w io.Writer, berth, ref Summary, meta map[string]string, extra ...Summary) {
	fmt.Fprintf(w, "# critest: berth-cri vs containerd's CRI\n\n")
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "- %s: %s\n", k, meta[k])
	}
	fmt.Fprintf(w, "\n| runtime | passed | failed | skipped | specs |\n|---|---|---|---|---|\n")
	for _, s := range append([]Summary{berth, ref}, extra...) {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d |\n", s.Runtime, s.Passed, s.Failed, s.Skipped, len(s.Specs))
	}
	b, r := berth.byName(), ref.byName()
	names := map[string]bool{}
	for n := range b {
		names[n] = true
	}
	for n := range r {
		names[n] = true
	}
	var list []string
	for n := range names {
		if b[n].State != "passed" || r[n].State != "passed" {
			list = append(list, n)
		}
	}
	sort.Strings(list)
	fmt.Fprintf(w, "\n## Specs not passed by both\n\n| spec | berth-cri | containerd | reason (berth-cri, else containerd) |\n|---|---|---|---|\n")
	for _, n := range list {
		reason := b[n].Message
		if reason == "" {
			reason = r[n].Message
		}
		if reason == "" {
			reason = knownSkip(n)
		}
		reason = strings.ReplaceAll(strings.ReplaceAll(reason, "|", "\\|"), "\n", " ")
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", n, orDash(b[n].State), orDash(r[n].State), reason)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// knownSkip explains skips that ginkgo reports without a message.
func knownSkip(name string) string {
	switch {
	case strings.Contains(name, "benchmark"):
		return "benchmark spec: critest runs these only with -benchmark (not part of validation)"
	case strings.Contains(name, "public image with digest"):
		return "skipped in both runs (--ginkgo.skip digest): the image is named by an upstream index digest that cannot be rebuilt offline"
	}
	return ""
}
