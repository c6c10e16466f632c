//go:build tools

// Package tools pins agnhost so that `go mod tidy` keeps everything it needs
// in go.mod and go.sum.
package tools

import _ "k8s.io/kubernetes/test/images/agnhost"
