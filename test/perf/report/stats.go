package report

import (
	"math"
	"sort"
)

// Median of xs (mean of the two middle values for an even count);
// NaN for an empty slice. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := sorted(xs)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile by the nearest-rank method: the smallest sample such that at
// least p percent of samples are <= it (p in (0,100]). NaN for no samples.
// With 200 samples p99 is the 198th smallest; with under 100, p99 = max.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := sorted(xs)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// MinMax returns the smallest and largest of xs (NaN, NaN if empty).
func MinMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	lo, hi = xs[0], xs[0]
	for _, x := range xs[1:] {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

func sorted(xs []float64) []float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s
}

// Ratio is a / b for two measurements, NaN when either is missing (NaN) or
// b is not positive: a ratio to a failed or empty reference means nothing,
// and NaN renders as "n/a" rather than as a misleading number.
func Ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 {
		return math.NaN()
	}
	return a / b
}
