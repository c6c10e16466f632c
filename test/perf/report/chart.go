// Package report holds the small, dependency-free pieces shared by berth's
// performance suites (network today, storage later): a hand-written SVG
// grouped bar chart, Markdown tables and a few order statistics.
package report

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// Series is one colour in a grouped bar chart: one value per group.
// A NaN value draws no bar and prints "n/a" (a case that failed or was
// skipped). Low and High, when set (same length as Values), draw a whisker
// from Low to High over the bar, e.g. the min and max of the samples.
type Series struct {
	Name   string
	Values []float64
	Low    []float64
	High   []float64
	// Color overrides the palette colour (e.g. "#0072B2"), to keep one
	// case's colour across charts that leave some cases out.
	Color string
}

// color is the series' fill: its own or the palette's i-th.
func (s Series) color(i int) string {
	if s.Color != "" {
		return s.Color
	}
	return palette[i%len(palette)]
}

// PaletteColor is the i-th colour of the default palette.
func PaletteColor(i int) string { return palette[i%len(palette)] }

// Chart is a grouped bar chart. Zero fields get sensible defaults.
type Chart struct {
	Title  string
	YLabel string
	Groups []string // one cluster of bars per group, left to right
	Series []Series // one bar per series inside each cluster
	// ValueFormat formats the value label over each bar; default "%.2f".
	ValueFormat string
	// Width and Height in px; 0 picks a width from the number of bars.
	Width, Height int
	// Note is an optional line of small grey text under the plot.
	Note string
	// Lines are dashed horizontal reference lines (a target, a ceiling).
	Lines []HLine
	// YMax, when > 0, fixes the top of the Y axis (rounded up to a whole
	// tick). A bar or whisker above it is cut at the top and marked with a
	// break; its label still prints the true value. For charts where one
	// case is orders of magnitude above the rest.
	YMax float64
}

// HLine is a labelled horizontal reference line.
type HLine struct {
	Value float64
	Label string
}

// palette is colour-blind friendly (Okabe-Ito).
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"}

// BarChart renders a grouped bar chart with default settings.
func BarChart(title string, groups []string, series []Series) []byte {
	return Chart{Title: title, Groups: groups, Series: series}.SVG()
}

// SVG renders the chart as a standalone SVG document.
func (c Chart) SVG() []byte {
	format := c.ValueFormat
	if format == "" {
		format = "%.2f"
	}
	nG, nS := len(c.Groups), len(c.Series)
	if nS == 0 {
		nS = 1
	}
	const (
		barW     = 30.0
		barGap   = 4.0
		groupPad = 28.0
		left     = 70.0
		top      = 56.0
		bottom   = 78.0
	)
	// Reference-line labels sit right of the plot, so they never collide
	// with bars or value labels.
	right := 20.0
	for _, l := range c.Lines {
		right = math.Max(right, 12+float64(len(l.Label))*5.6)
	}
	groupW := float64(nS)*barW + float64(nS-1)*barGap + groupPad
	// Long group labels need room too (about 6.6 px per char at 11 px).
	for _, g := range c.Groups {
		if w := float64(len(g))*6.6 + 12; w > groupW {
			groupW = w
		}
	}
	width := float64(c.Width)
	if width == 0 {
		width = math.Max(480, left+right+groupW*float64(max(nG, 1)))
		// Wide enough for the title and the legend too; extra room goes to
		// the groups.
		legendW := 0.0
		for _, s := range c.Series {
			legendW += 22 + float64(len(s.Name))*7 + 14
		}
		width = math.Max(width, math.Max(float64(len(c.Title))*10+40, legendW+left+right))
		if nG > 0 {
			groupW = (width - left - right) / float64(nG)
		}
	}
	height := float64(c.Height)
	if height == 0 {
		height = 400
	}
	if c.Width != 0 && nG > 0 {
		groupW = (width - left - right) / float64(nG)
	}
	plotH := height - top - bottom
	plotW := width - left - right

	// Y scale: 0 .. a "nice" maximum over values and whiskers.
	vmax := 0.0
	for _, s := range c.Series {
		for i, v := range s.Values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				vmax = math.Max(vmax, v)
			}
			if i < len(s.High) && !math.IsNaN(s.High[i]) && !math.IsInf(s.High[i], 0) {
				vmax = math.Max(vmax, s.High[i])
			}
		}
	}
	for _, l := range c.Lines {
		if !math.IsNaN(l.Value) && !math.IsInf(l.Value, 0) {
			vmax = math.Max(vmax, l.Value)
		}
	}
	if c.YMax > 0 && vmax > c.YMax {
		vmax = c.YMax
	}
	step, ymax := niceScale(vmax, 5)
	// Values above the axis are drawn at the axis top (clipped).
	y := func(v float64) float64 { return top + plotH - math.Min(v, ymax)/ymax*plotH }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%.0f" height="%.0f" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%.1f" y="24" font-size="16" font-weight="bold" text-anchor="middle">%s</text>`+"\n", width/2, esc(c.Title))

	// Grid and Y axis labels.
	for v := 0.0; v <= ymax+step/1e6; v += step {
		yy := y(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd" stroke-width="1"/>`+"\n", left, yy, left+plotW, yy)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end" fill="#333333">%s</text>`+"\n", left-6, yy+4, esc(tickLabel(v, step)))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333" stroke-width="1"/>`+"\n", left, top, left, top+plotH)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333" stroke-width="1"/>`+"\n", left, top+plotH, left+plotW, top+plotH)
	if c.YLabel != "" {
		fmt.Fprintf(&b, `<text x="16" y="%.1f" font-size="12" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n", top+plotH/2, top+plotH/2, esc(c.YLabel))
	}

	// Reference lines, under the bars; labels right of the plot, nudged
	// apart when two lines are close.
	var labelYs []float64
	for _, l := range c.Lines {
		if math.IsNaN(l.Value) || math.IsInf(l.Value, 0) || l.Value > ymax {
			continue
		}
		yy := y(l.Value)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555555" stroke-width="1" stroke-dasharray="6 4"/>`+"\n", left, yy, left+plotW, yy)
		if l.Label != "" {
			ly := yy + 3
			for moved := true; moved; {
				moved = false
				for _, o := range labelYs {
					if math.Abs(ly-o) < 11 {
						ly, moved = o+11, true
					}
				}
			}
			labelYs = append(labelYs, ly)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="start" fill="#555555">%s</text>`+"\n", left+plotW+4, ly, esc(l.Label))
		}
	}

	// Bars.
	clusterW := float64(nS)*barW + float64(nS-1)*barGap
	for gi, g := range c.Groups {
		gx := left + float64(gi)*groupW + (groupW-clusterW)/2
		for si, s := range c.Series {
			x := gx + float64(si)*(barW+barGap)
			col := s.color(si)
			v := math.NaN()
			if gi < len(s.Values) {
				v = s.Values[gi]
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#999999">n/a</text>`+"\n", x+barW/2, top+plotH-4)
				continue
			}
			yy := y(math.Max(v, 0))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s / %s: %s</title></rect>`+"\n",
				x, yy, barW, top+plotH-yy, col, esc(g), esc(s.Name), esc(fmt.Sprintf(format, v)))
			if v > ymax {
				// Axis break: two white slashes across the clipped bar.
				for _, dy := range []float64{10, 16} {
					fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ffffff" stroke-width="2"/>`+"\n", x-2, yy+dy+4, x+barW+2, yy+dy-4)
				}
			}
			labelY := yy - 4
			if gi < len(s.Low) && gi < len(s.High) && !math.IsNaN(s.Low[gi]) && !math.IsNaN(s.High[gi]) {
				lo, hi := y(s.Low[gi]), y(s.High[gi])
				cx := x + barW/2
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222222" stroke-width="1"/>`+"\n", cx, lo, cx, hi)
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222222" stroke-width="1"/>`+"\n", cx-5, lo, cx+5, lo)
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222222" stroke-width="1"/>`+"\n", cx-5, hi, cx+5, hi)
				labelY = math.Min(labelY, hi-4)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#222222">%s</text>`+"\n", x+barW/2, labelY, esc(fmt.Sprintf(format, v)))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`+"\n", left+float64(gi)*groupW+groupW/2, top+plotH+18, esc(g))
	}

	// Legend, centred under the group labels.
	legendW := 0.0
	for _, s := range c.Series {
		legendW += 22 + float64(len(s.Name))*7 + 14
	}
	lx := left + (plotW-legendW)/2
	ly := top + plotH + 42
	for si, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="14" height="14" fill="%s"/>`+"\n", lx, ly-11, s.color(si))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12">%s</text>`+"\n", lx+20, ly, esc(s.Name))
		lx += 22 + float64(len(s.Name))*7 + 14
	}
	if c.Note != "" {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#777777" text-anchor="middle">%s</text>`+"\n", width/2, height-8, esc(c.Note))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceScale returns a tick step (1, 2, 2.5 or 5 times a power of ten) and
// an axis maximum that is a whole number of steps at or above vmax.
func niceScale(vmax float64, ticks int) (step, top float64) {
	if vmax <= 0 || math.IsNaN(vmax) {
		return 1, float64(ticks)
	}
	raw := vmax / float64(ticks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	top = math.Ceil(vmax/step-1e-9) * step
	if top < vmax*1.08 { // leave headroom for the value labels
		top += step
	}
	return step, top
}

func tickLabel(v, step float64) string {
	if step >= 1 && step == math.Trunc(step) {
		return fmt.Sprintf("%.0f", v)
	}
	dec := int(math.Max(0, math.Ceil(-math.Log10(step)+1e-9)))
	if step*math.Pow(10, float64(dec)) != math.Trunc(step*math.Pow(10, float64(dec))) {
		dec++
	}
	return fmt.Sprintf("%.*f", dec, v)
}

var xmlEsc = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

func esc(s string) string { return xmlEsc.Replace(s) }
