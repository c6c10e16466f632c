package critest

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `[{"SuiteDescription":"CRI validation","SpecReports":[
 {"ContainerHierarchyTexts":["[k8s.io] Container","runtime should support"],"LeafNodeText":"basic ops","LeafNodeType":"It","State":"passed","RunTime":2000000000},
 {"ContainerHierarchyTexts":["[k8s.io] AppArmor"],"LeafNodeText":"load profile","LeafNodeType":"It","State":"skipped","Failure":{"Message":"apparmor is not enabled"}},
 {"ContainerHierarchyTexts":["[k8s.io] Image"],"LeafNodeText":"pull digest","LeafNodeType":"It","State":"failed","Failure":{"Message":"not found\nstack"}},
 {"LeafNodeText":"","LeafNodeType":"SynchronizedBeforeSuite","State":"passed"}
]}]`

func TestParseAndMarkdown(t *testing.T) {
	s, err := Parse("berth-cri", strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed != 1 || s.Failed != 1 || s.Skipped != 1 || len(s.Specs) != 3 {
		t.Fatalf("summary %+v", s)
	}
	if got := s.Totals(); got != "berth-cri: 1 passed, 1 failed, 1 skipped (3 specs)" {
		t.Fatalf("totals %q", got)
	}
	ref := s
	ref.Runtime = "containerd"
	var buf bytes.Buffer
	Markdown(&buf, s, ref, map[string]string{"critest": "v1.36.0"})
	out := buf.String()
	for _, want := range []string{"| berth-cri | 1 | 1 | 1 | 3 |", "apparmor is not enabled", "[k8s.io] Image pull digest | failed | failed | not found"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "basic ops") {
		t.Errorf("a spec both passed is listed:\n%s", out)
	}
}
