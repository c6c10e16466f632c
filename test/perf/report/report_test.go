package report

import (
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

func TestBarChartIsWellFormedXML(t *testing.T) {
	nan := math.NaN()
	svg := Chart{
		Title:  `a <title> & "quotes"`,
		YLabel: "Gbit/s",
		Groups: []string{"veth-raw", "macvlan-ref", "vxlan-flannel-like"},
		Series: []Series{
			{Name: "P1", Values: []float64{40, 30.5, nan}, Low: []float64{38, 29, nan}, High: []float64{41, 31, nan}},
			{Name: "P4", Values: []float64{45, 33, 9}},
		},
		Note: "2-core VM",
	}.SVG()
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	rects, texts := 0, []string{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if el.Name.Local == "rect" {
				rects++
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(el)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	// background + 5 bars + 2 legend swatches
	if rects != 8 {
		t.Errorf("rects = %d, want 8", rects)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{`a <title> & "quotes"`, "n/a", "40.00", "vxlan-flannel-like", "P4", "Gbit/s"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart text lacks %q: %s", want, all)
		}
	}
}

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct{ vmax, step, top float64 }{
		{0, 1, 5}, {9.3, 2, 12}, {47, 10, 60}, {0.42, 0.1, 0.5}, {100, 20, 120},
	} {
		step, top := niceScale(tc.vmax, 5)
		if math.Abs(step-tc.step) > 1e-9 || math.Abs(top-tc.top) > 1e-9 {
			t.Errorf("niceScale(%v) = %v,%v want %v,%v", tc.vmax, step, top, tc.step, tc.top)
		}
	}
}

func TestStats(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if m := Median(xs); m != 3 {
		t.Errorf("median %v", m)
	}
	if m := Median([]float64{1, 2, 3, 4}); m != 2.5 {
		t.Errorf("median even %v", m)
	}
	if xs[0] != 5 {
		t.Error("Median modified its input")
	}
	var h []float64
	for i := 1; i <= 200; i++ {
		h = append(h, float64(i))
	}
	if p := Percentile(h, 99); p != 198 {
		t.Errorf("p99 of 1..200 = %v, want 198", p)
	}
	if p := Percentile(h, 50); p != 100 {
		t.Errorf("p50 of 1..200 = %v, want 100", p)
	}
	if p := Percentile([]float64{7, 9}, 99); p != 9 {
		t.Errorf("p99 small = %v", p)
	}
	if !math.IsNaN(Percentile(nil, 50)) || !math.IsNaN(Median(nil)) {
		t.Error("empty should be NaN")
	}
	lo, hi := MinMax(xs)
	if lo != 1 || hi != 5 {
		t.Errorf("minmax %v %v", lo, hi)
	}
}

func TestTable(t *testing.T) {
	got := Table([]string{"a", "b"}, [][]string{{"1", "x|y"}, {"2"}})
	want := "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n| 2 |  |\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestChartLinesAndClipping(t *testing.T) {
	svg := string(Chart{
		Title:  "overshoot",
		Groups: []string{"10M", "100M"},
		Series: []Series{{Name: "a", Values: []float64{1.1, 42}, Low: []float64{1, 30}, High: []float64{1.2, 55}}},
		Lines:  []HLine{{Value: 1.5, Label: "target 1.5x"}, {Value: 100, Label: "off the axis"}},
		YMax:   4,
	}.SVG())
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("not well-formed: %v", err)
	}
	for _, want := range []string{"target 1.5x", "42.00", "stroke-dasharray"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if strings.Contains(svg, "off the axis") {
		t.Error("a line above YMax was drawn")
	}
	// The axis stops near YMax instead of stretching to 55.
	if strings.Contains(svg, ">60<") || strings.Contains(svg, ">50<") {
		t.Errorf("axis not clipped at YMax:\n%s", svg)
	}
}
