package cri

import (
	"context"
	"fmt"
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
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics registers berth-cri's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_cri_requests_total", Help: "CRI requests by method.",
		}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_cri_request_errors_total", Help: "CRI requests that failed, by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_cri_request_duration_seconds",
			Help:    "CRI request latency by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
	}
	reg.MustRegister(m.calls, m.errors, m.latency)
	return m
}

// Interceptor records metrics, logs failures, and turns a panic in a
// handler into codes.Internal instead of killing every pod's runtime.
func (m *Metrics) Interceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		method := path.Base(info.FullMethod)
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in CRI handler", "method", method, "panic", r, "stack", string(debug.Stack()))
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
				log.Log(ctx, lvl, "CRI request failed", "method", method, "code", code.String(), "err", err)
			} else {
				log.Debug("CRI request", "method", method, "duration", time.Since(start))
			}
		}()
		return h(ctx, req)
	}
}

// errorf wraps a non-gRPC error as Internal, keeping gRPC statuses as they are.
func errorf(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Internal, "%s: %v", fmt.Sprintf(format, args...), err)
}
