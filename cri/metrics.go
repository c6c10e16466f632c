package cri

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berthdev/berth/internal/rpcmetrics"
)

// NewMetrics registers berth-cri's per-RPC metrics (berth_cri_requests_total
// and friends) on reg.
func NewMetrics(reg prometheus.Registerer) *rpcmetrics.Metrics {
	return rpcmetrics.New(reg, "berth_cri", "CRI")
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
