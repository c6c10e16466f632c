package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/berthdev/berth/cni/kube"
	"github.com/berthdev/berth/internal/kubeconfig"
)

// startKubernetes starts the syncer that writes the peers and mapping
// files from the API, waits for the first files, and returns the options
// pointing the reconciler at them.
func startKubernetes(ctx context.Context, o options, logger *slog.Logger, dp *dataplane, m *metrics) (options, error) {
	if o.peersFile == "" {
		o.peersFile = defaultKubePeersFile
	}
	switch o.mappingFile {
	case "":
		o.mappingFile = defaultKubeMappingFile
	case "-":
		o.mappingFile = ""
	}
	cfg, err := kubeconfig.Load(o.kubeconfig, "berth-netd")
	if err != nil {
		return o, fmt.Errorf("--kubernetes: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return o, fmt.Errorf("--kubernetes: %w", err)
	}
	// Traffic between a pod and another node's own address is asymmetric
	// in VXLAN mode: it leaves through the underlay link and comes back
	// through berth.<vni> (the route to the pod CIDR). Strict reverse-path
	// filtering drops it, which breaks every Service whose endpoints are
	// node addresses (the API server). Loose mode (2) on "all" makes every
	// interface at least loose, as the kernel takes the maximum.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("2"), 0); err != nil {
		logger.Warn("could not set loose reverse-path filtering; pod traffic to node addresses may be dropped", "err", err)
	} else {
		logger.Info("reverse-path filtering set to loose (net.ipv4.conf.all.rp_filter=2)")
	}
	s := &kube.Syncer{Client: client, PeersFile: o.peersFile, MappingFile: o.mappingFile, Logger: logger.With("component", "kube")}
	if len(o.confTemplates) != len(o.confFiles) {
		return o, fmt.Errorf("--cni-conflist-template given %d times and --cni-conflist %d times; they come in pairs", len(o.confTemplates), len(o.confFiles))
	}
	for i, path := range o.confTemplates {
		tmpl, err := os.ReadFile(path)
		if err != nil {
			return o, fmt.Errorf("--cni-conflist-template: %w", err)
		}
		s.Confs = append(s.Confs, kube.Conf{Template: string(tmpl), File: o.confFiles[i]})
	}
	remote := o.remoteEndpoints && o.bpfPinDir != ""
	if len(s.Confs) > 0 || remote {
		node := o.nodeName
		if node == "" {
			host, err := os.Hostname()
			if err != nil {
				return o, fmt.Errorf("--node-name not given and hostname unknown: %w", err)
			}
			node = strings.ToLower(host)
		}
		s.NodeName = node
	}
	// The registry gives the identities of remote pods as of local ones;
	// with cluster-wide indexes it is also where the table is mirrored.
	s.TenantRegistry = o.tenantRegistry
	if remote {
		s.RemoteMaps = func() (kube.RemoteMap, error) {
			maps, err := dp.ensureMaps()
			if err != nil {
				return nil, err
			}
			rm, ok := maps.(kube.RemoteMap)
			if !ok {
				return nil, fmt.Errorf("the BPF maps in %s have no berth_remote", o.bpfPinDir)
			}
			return rm, nil
		}
		s.OnRemote = m.observeRemote
	}
	switch {
	case o.tenantTable == "-" || o.tenantTable == "":
	case o.mappingFile == "" || o.tenantRegistry == "":
		// Without the namespace mapping there are no tenants to assign,
		// and without a registry nowhere to mirror them.
		logger.Info("no cluster-wide tenant indexes: --tenant-mapping-file or --tenant-registry is disabled")
	default:
		ns, name, ok := strings.Cut(o.tenantTable, "/")
		if !ok || ns == "" || name == "" {
			return o, fmt.Errorf("--tenant-configmap %q: want namespace/name", o.tenantTable)
		}
		s.Tenants = &kube.TenantAllocator{Client: client, Namespace: ns, Name: name, Logger: s.Logger}
	}
	if err := s.Run(ctx); err != nil {
		return o, err
	}
	logger.Info("Kubernetes mode: peers and tenant mapping follow the API", "peersFile", o.peersFile, "mappingFile", o.mappingFile,
		"tenantConfigMap", o.tenantTable, "tenantRegistry", o.tenantRegistry, "conflists", o.confFiles, "remoteEndpoints", remote)
	return o, nil
}
