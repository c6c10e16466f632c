// Package crienv gives root integration tests of berth-cri a private CRI
// environment: the containerd/runc/cri-tools binaries built by
// hack/install-cri-tools.sh, a throwaway containerd of their own (with or
// without its CRI plugin, for reference runs), and the local registry that
// serves critest's images under their public names.
//
// Nothing here touches the machine's own container stack: Docker's
// containerd (/usr/bin/containerd) and runc (/usr/sbin/runc) are never on
// the path this package builds, binaries are always started by full path,
// and each private containerd keeps its root, state and sockets in one
// directory that its cleanup unmounts and removes.
package crienv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// DefaultToolsDir is where hack/install-cri-tools.sh installs the tools.
const DefaultToolsDir = "/opt/berth/bin"

// Paths are the absolute paths of the CRI tools.
type Paths struct {
	Dir        string
	Containerd string
	Shim       string // containerd-shim-runc-v2, found by containerd on PATH
	Ctr        string
	Runc       string
	Crictl     string
	Critest    string
	Ginkgo     string
	Registry   string
}

// Tools locates the CRI tools in $BERTH_CRI_TOOLS or DefaultToolsDir. The
// error names what is missing and how to get it; callers usually turn it
// into t.Skip (see Require).
func Tools() (Paths, error) {
	dir := os.Getenv("BERTH_CRI_TOOLS")
	if dir == "" {
		dir = DefaultToolsDir
	}
	p := Paths{Dir: dir}
	var missing []string
	for _, f := range []struct {
		dst  *string
		name string
	}{
		{&p.Containerd, "containerd"}, {&p.Shim, "containerd-shim-runc-v2"}, {&p.Ctr, "ctr"},
		{&p.Runc, "runc"}, {&p.Crictl, "crictl"}, {&p.Critest, "critest"},
		{&p.Ginkgo, "ginkgo"}, {&p.Registry, "registry"},
	} {
		*f.dst = filepath.Join(dir, f.name)
		if st, err := os.Stat(*f.dst); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("CRI tools missing in %s (%v): run hack/install-cri-tools.sh or set BERTH_CRI_TOOLS", dir, missing)
	}
	return p, nil
}

// Require skips the test unless it can use the CRI environment: root,
// BERTH_SKIP_INTEGRATION unset, and every tool installed.
func Require(t testing.TB) Paths {
	t.Helper()
	if err := usable(); err != nil {
		t.Skip(err)
	}
	p, err := Tools()
	if err != nil {
		t.Skip(err)
	}
	return p
}

func usable() error {
	if os.Getenv("BERTH_SKIP_INTEGRATION") != "" {
		return errors.New("BERTH_SKIP_INTEGRATION is set")
	}
	if os.Geteuid() != 0 {
		return errors.New("CRI integration tests need root (containerd, mounts, namespaces)")
	}
	return nil
}
