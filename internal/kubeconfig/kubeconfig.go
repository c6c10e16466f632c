// Package kubeconfig gives the API client configuration of berth's node
// agents: a kubeconfig file when one is named (running outside the cluster,
// tests), else the pod's service account (the DaemonSets).
package kubeconfig

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load reads path, or the in-cluster configuration when path is empty,
// and sets the user agent the API server's audit log will show.
func Load(path, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	return cfg, nil
}
