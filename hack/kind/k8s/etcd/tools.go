//go:build tools

// Package tools pins the etcd commands hack/kind/build-k8s.sh builds.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
