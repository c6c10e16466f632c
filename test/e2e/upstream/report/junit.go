package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// junitSuites is the part of ginkgo v2's JUnit report the summary needs.
// ginkgo lists every spec of the suite, including those its --focus/--skip
// filtered out (status "skipped", message "skipped"), so the report works
// out itself which specs belong to a subset.
type junitSuites struct {
	Suites []struct {
		Cases []junitCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitCase struct {
	Name    string  `xml:"name,attr"`
	Status  string  `xml:"status,attr"`
	Time    float64 `xml:"time,attr"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
	Failure *struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Error *struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	} `xml:"error"`
}

// Spec is one spec's outcome on one cluster.
type Spec struct {
	Name    string  // spec text without ginkgo's node-type prefix and label suffix
	Status  string  // passed, failed or skipped
	Message string  // failure or skip message
	Seconds float64 // run time
}

// itPrefix is the node type ginkgo puts before a spec's text ("[It] ").
var itPrefix = regexp.MustCompile(`^\[[A-Za-z]+\] `)

// labelSuffix is the label list ginkgo appends to a spec's text in JUnit
// (" [sig-node, Conformance]"). Kubernetes keeps its tags in the text too,
// so dropping the list leaves what --focus and --skip see.
var labelSuffix = regexp.MustCompile(` \[[^\[\]]*(, [^\[\]]*)*\]$`)

// specName turns a JUnit test case name into the spec text. Only ginkgo's
// appended label list is removed: it is recognised by holding a comma or
// by being a duplicate of a tag already in the text.
func specName(name string) string {
	name = itPrefix.ReplaceAllString(name, "")
	if m := labelSuffix.FindStringIndex(name); m != nil {
		list := name[m[0]+2 : m[1]-1]
		rest := name[:m[0]]
		if strings.Contains(list, ", ") || strings.Contains(rest, "["+list+"]") {
			return rest
		}
	}
	return name
}

// parseJUnit reads a ginkgo JUnit report. Setup nodes (BeforeSuite,
// SynchronizedBeforeSuite, ...) are returned too, under their own names, so
// a failed suite setup shows.
func parseJUnit(r io.Reader) ([]Spec, error) {
	var s junitSuites
	if err := xml.NewDecoder(r).Decode(&s); err != nil {
		return nil, fmt.Errorf("junit: %w", err)
	}
	var specs []Spec
	for _, suite := range s.Suites {
		for _, c := range suite.Cases {
			sp := Spec{Name: specName(c.Name), Seconds: c.Time}
			switch {
			case c.Failure != nil:
				sp.Status, sp.Message = "failed", firstNonEmpty(c.Failure.Text, c.Failure.Message)
			case c.Error != nil:
				sp.Status, sp.Message = "failed", firstNonEmpty(c.Error.Text, c.Error.Message)
			case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
				sp.Status = "skipped"
				if c.Skipped != nil {
					sp.Message = c.Skipped.Message
				}
			case c.Status == "passed" || c.Status == "":
				sp.Status = "passed"
			default: // panicked, interrupted, aborted, timedout
				sp.Status, sp.Message = "failed", c.Status
			}
			specs = append(specs, sp)
		}
	}
	return specs, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
