package main

import (
	"fmt"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berthdev/berth/csi/contentowner"
)

// newContentOwner builds the watcher of pre-provisioned snapshot contents.
// It is the only part of berth-csi that talks to the API server; the CSI
// services themselves get everything from kubelet and the sidecars.
func newContentOwner(o options, log *slog.Logger) (*contentowner.Owner, error) {
	var cfg *rest.Config
	var err error
	if o.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("--claim-snapshot-contents: %w", err)
	}
	cfg.UserAgent = "berth-csi/" + version
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--claim-snapshot-contents: %w", err)
	}
	return &contentowner.Owner{Client: client, Driver: o.cfg.DriverName, Node: o.cfg.NodeID,
		Log: log.With("component", "contentowner")}, nil
}
