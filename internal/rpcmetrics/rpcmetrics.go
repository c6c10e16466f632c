// Package rpcmetrics counts, times and logs the unary RPCs of a gRPC
// server (berth-cri and berth-csi), and turns a handler panic into
// codes.Internal so that one bad request cannot take the daemon down.
package rpcmetrics

import (
	"context"
	"log/slog"
	"path"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics are per-RPC counters, error counters and latency histograms.
type Metrics struct {
	api     string
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// New registers <prefix>_requests_total, <prefix>_request_errors_total
// and <prefix>_request_duration_seconds on reg. api names the protocol in
// help texts and logs ("CRI", "CSI").
func New(reg prometheus.Registerer, prefix, api string) *Metrics {
	m := &Metrics{
		api: api,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_requests_total", Help: api + " requests by method.",
		}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_request_errors_total", Help: api + " requests that failed, by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prefix + "_request_duration_seconds",
			Help:    api + " request latency by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
	}
	reg.MustRegister(m.calls, m.errors, m.latency)
	return m
}

// Interceptor records metrics, logs failures, and recovers panics.
func (m *Metrics) Interceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		method := path.Base(info.FullMethod)
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in "+m.api+" handler", "method", method, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "%s: internal error: %v", method, r)
			}
			m.calls.WithLabelValues(method).Inc()
			m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
			if err != nil {
				code := status.Code(err)
				m.errors.WithLabelValues(method, code.String()).Inc()
				lvl := slog.LevelWarn
				if code == codes.Internal || code == codes.Unknown {
					lvl = slog.LevelError
				}
				log.Log(ctx, lvl, m.api+" request failed", "method", method, "code", code.String(), "err", err)
			} else {
				log.Debug(m.api+" request", "method", method, "duration", time.Since(start))
			}
		}()
		return h(ctx, req)
	}
}
