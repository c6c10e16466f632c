package integration

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// This file drives berth through the reference cnitool binary, the way an
// operator debugging a node would: conflist in NETCONFPATH, plugins from
// CNI_PATH, `cnitool add|check|del|gc|status <net> <netns>`.

// rtCnitool finds the cnitool binary hack/install-deps.sh installs, or one
// in PATH, and skips the test without it.
func rtCnitool(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../../_output/tools/cnitool"); err == nil {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("cnitool"); err == nil {
		return p
	}
	t.Skip("cnitool not found in _output/tools or PATH; run hack/install-deps.sh (github.com/containernetworking/cni/cnitool)")
	return ""
}

// rtCnitoolID is the container ID cnitool derives from a netns path.
func rtCnitoolID(nsPath string) string {
	s := sha512.Sum512([]byte(nsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// cnitoolRun runs cnitool inside node n, as if n were the host.
//
// cnitool gives libcni no cache directory, so results would land in the
// machine-wide /var/lib/cni. Each run therefore gets a private mount
// namespace with varLib (a test temp dir) bound over /var/lib: the cache
// lives and dies with the test, and concurrent runs cannot see each
// other's attachments.
type cnitoolRun struct {
	bin, netconf, varLib string
	n                    node
}

func newCnitoolRun(t *testing.T, bin, netconf string, n node) cnitoolRun {
	t.Helper()
	return cnitoolRun{bin: bin, netconf: netconf, varLib: t.TempDir(), n: n}
}

// cachePath is where cnitool's libcni caches the attachment's result.
func (c cnitoolRun) cachePath(network, containerID, ifName string) string {
	return filepath.Join(c.varLib, "cni", "results", network+"-"+containerID+"-"+ifName)
}

func (c cnitoolRun) run(args ...string) (stdout, stderr string, err error) {
	const script = `lib=$1 net=$2; shift 2; mount --bind "$lib" /var/lib && exec nsenter --net="$net" -- "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--",
		"sh", "-c", script, "sh", c.varLib, c.n.Path(), c.bin}, args...)...)
	cmd.Env = []string{
		"NETCONFPATH=" + c.netconf,
		"CNI_PATH=" + binDir + ":/usr/lib/cni",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (c cnitoolRun) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		t.Fatalf("cnitool %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// TestCnitoolLifecycle adds two pods with cnitool, pings between them,
// checks them and tears them down either with `cnitool del` per pod or with
// one `cnitool gc` (which DELs every cached attachment of the network and
// then sends the plugin a GC with no valid attachment).
func TestCnitoolLifecycle(t *testing.T) {
	requireRoot(t)
	bin := rtCnitool(t)
	tests := []struct {
		name     string
		teardown string
	}{
		{name: "del", teardown: "del"},
		{name: "gc", teardown: "gc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newMacvlanNode(t)
			nodeLinks := n.links(t)
			const network = "bti-cnitool"
			const subnet = "198.18.20.0/24"
			dataDir, confDir := t.TempDir(), t.TempDir()
			rtConflist(t, confDir, "10-berth.conflist", "1.1.0", network, rtBerthPlugin(t, n.Uplink, subnet, dataDir))
			ct := newCnitoolRun(t, bin, confDir, n)

			if out := ct.mustRun(t, "status", network, "/dev/null"); strings.TrimSpace(out) != "" {
				t.Errorf("status printed %q", out)
			}

			var pods []pod
			for i := 0; i < 2; i++ {
				p := pod{ns: newNS(t, "p"), ifName: "eth0"}
				p.id = rtCnitoolID(p.ns.Path())
				out := ct.mustRun(t, "add", network, p.ns.Path())
				if _, err := os.Stat(ct.cachePath(network, p.id, "eth0")); err != nil {
					t.Errorf("cnitool cached no result under the derived container ID %s: %v", p.id, err)
				}
				t.Cleanup(func() { _, _, _ = ct.run("del", network, p.ns.Path()) })
				var v struct {
					CNIVersion string `json:"cniVersion"`
				}
				if err := json.Unmarshal([]byte(out), &v); err != nil || v.CNIVersion != "1.1.0" {
					t.Errorf("add output cniVersion %q (%v), want 1.1.0:\n%s", v.CNIVersion, err, out)
				}
				p.raw = []byte(out)
				p.result = parseResult(t, p.raw)
				rtVerifyAttached(t, p.result, p.ns, "eth0", subnet)
				if got := rtOwner(t, dataDir, network, p.ip()); got != p.id {
					t.Errorf("address %s recorded for %q, want cnitool's %q", p.ip(), got, p.id)
				}
				pods = append(pods, p)
			}
			if pods[0].ip() == pods[1].ip() {
				t.Fatalf("both pods got %s", pods[0].ip())
			}
			if err := pods[0].ns.ping(pods[1].ip()); err != nil {
				t.Error(err)
			}
			if err := pods[1].ns.ping(pods[0].ip()); err != nil {
				t.Error(err)
			}
			for _, p := range pods {
				ct.mustRun(t, "check", network, p.ns.Path())
			}
			if got := allocations(t, dataDir, network); len(got) != 2 {
				t.Errorf("allocations %v, want 2", got)
			}

			switch tc.teardown {
			case "del":
				for _, p := range pods {
					ct.mustRun(t, "del", network, p.ns.Path())
				}
			case "gc":
				// cnitool gc requires a netns argument it then ignores.
				ct.mustRun(t, "gc", network, pods[0].ns.Path())
			}
			for i, p := range pods {
				if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
					t.Errorf("pod %d links after %s: %v", i, tc.teardown, got)
				}
				cache := ct.cachePath(network, p.id, "eth0")
				if _, err := os.Stat(cache); !os.IsNotExist(err) {
					t.Errorf("cnitool cache %s still there after %s (%v)", cache, tc.teardown, err)
				}
			}
			if got := allocations(t, dataDir, network); len(got) != 0 {
				t.Errorf("allocations left after %s: %v", tc.teardown, got)
			}
			if got := rtMentions(t, dataDir, pods[0].id, pods[1].id); len(got) != 0 {
				t.Errorf("files still naming the pods after %s: %v", tc.teardown, got)
			}
			if got := n.links(t); !slices.Equal(got, nodeLinks) {
				t.Errorf("node links changed: before %v after %v", nodeLinks, got)
			}
		})
	}
}

// TestCnitoolStatusUnavailable: `cnitool status` fails, naming the
// problem, when the master does not exist.
func TestCnitoolStatusUnavailable(t *testing.T) {
	requireRoot(t)
	bin := rtCnitool(t)
	n := newMacvlanNode(t)
	const network = "bti-cnitool"
	confDir := t.TempDir()
	rtConflist(t, confDir, "10-berth.conflist", "1.1.0", network, rtBerthPlugin(t, "btinomaster", "198.18.20.0/24", t.TempDir()))
	ct := newCnitoolRun(t, bin, confDir, n)
	out, errOut, err := ct.run("status", network, "/dev/null")
	if err == nil {
		t.Fatalf("status succeeded with a missing master: %s", out)
	}
	if !strings.Contains(errOut, `master: link "btinomaster" does not exist`) {
		t.Errorf("status error does not name the missing master:\nstdout: %s\nstderr: %s", out, errOut)
	}
}
