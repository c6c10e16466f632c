package perfnet

import (
	"math"
	"sort"
	"strings"
)

// DisplayArgs drops --berth-build-error and its value (the compiler's
// output, shown elsewhere in the report) from the command line we print.
func DisplayArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--berth-build-error" || a == "-berth-build-error":
			i++
		case strings.HasPrefix(a, "--berth-build-error=") || strings.HasPrefix(a, "-berth-build-error="):
		default:
			out = append(out, a)
		}
	}
	return out
}

// QuoteArgs renders argv for copy-paste.
func QuoteArgs(args []string) string {
	var q []string
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}

// SortedKeys returns a map's keys in order, for deterministic output.
func SortedKeys[V any](m map[string]V) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

// Verdict is the wording every report uses for a target.
func Verdict(ok bool) string {
	if ok {
		return "target met"
	}
	return "target missed"
}

// FPtr is v, or nil for NaN/Inf (JSON null, "n/a" in reports).
func FPtr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Val is *p, or NaN for nil.
func Val(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}
