package main

import (
	"fmt"
	"log/slog"

	"k8s.io/client-go/dynamic"

	"github.com/berthdev/berth/csi/contentowner"
	"github.com/berthdev/berth/internal/kubeconfig"
)

// newContentOwner builds the watcher of pre-provisioned snapshot contents.
// It is the only part of berth-csi that talks to the API server; the CSI
// services themselves get everything from kubelet and the sidecars.
func newContentOwner(o options, log *slog.Logger) (*contentowner.Owner, error) {
	cfg, err := kubeconfig.Load(o.kubeconfig, "berth-csi/"+version)
	if err != nil {
		return nil, fmt.Errorf("--claim-snapshot-contents: %w", err)
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--claim-snapshot-contents: %w", err)
	}
	return &contentowner.Owner{Client: client, Driver: o.cfg.DriverName, Node: o.cfg.NodeID,
		Log: log.With("component", "contentowner")}, nil
}
