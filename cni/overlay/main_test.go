package overlay

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes the test binary act as a separate reconciling process
// (standing in for a berth-cni invocation) instead of running tests.
const helperEnv = "BERTH_OVERLAY_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "reconcile" {
		os.Exit(helperReconcile())
	}
	os.Exit(m.Run())
}

// helperReconcile runs one Reconcile as configured by the environment and
// prints the Stats as JSON.
func helperReconcile() int {
	peers, err := LoadPeers(os.Getenv("BON_PEERS_FILE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	d := Device{
		VNI:     1,
		LocalIP: netip.MustParseAddr(os.Getenv("BON_LOCAL_IP")),
		PodCIDR: netip.MustParsePrefix(os.Getenv("BON_POD_CIDR")),
		LockDir: os.Getenv("BON_LOCK_DIR"),
	}
	st, err := d.Reconcile(peers, os.Getenv("BON_NODE_NAME"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// reconcileInProcess runs Reconcile for node n in a separate process inside
// the node's namespace.
func reconcileInProcess(n *node, peersFile string) (Stats, error) {
	cmd := exec.Command("ip", "netns", "exec", n.Name, os.Args[0])
	cmd.Env = append(os.Environ(),
		helperEnv+"=reconcile",
		"BON_PEERS_FILE="+peersFile,
		"BON_LOCAL_IP="+n.dev.LocalIP.String(),
		"BON_POD_CIDR="+n.dev.PodCIDR.String(),
		"BON_LOCK_DIR="+n.dev.LockDir,
		"BON_NODE_NAME="+n.name,
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Stats{}, fmt.Errorf("helper process: %v: %s", err, stderr.String())
	}
	var st Stats
	if err := json.Unmarshal(out, &st); err != nil {
		return Stats{}, fmt.Errorf("helper process output %q: %v", out, err)
	}
	return st, nil
}
