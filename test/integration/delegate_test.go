package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rtHostLocal finds the reference host-local plugin on cniPath and skips
// unless it speaks version.
func rtHostLocal(t *testing.T, version string) string {
	t.Helper()
	for _, dir := range filepath.SplitList(cniPath) {
		p := filepath.Join(dir, "host-local")
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		cmd := exec.Command(p)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("%s VERSION: %v", p, err)
		}
		var info struct {
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Skipf("%s VERSION: %v: %s", p, err, out)
		}
		if !slices.Contains(info.SupportedVersions, version) {
			t.Skipf("%s does not support CNI %s (supports %v)", p, version, info.SupportedVersions)
		}
		return p
	}
	t.Skip("reference host-local IPAM plugin not found in /usr/lib/cni or /opt/cni/bin; install containernetworking-plugins (hack/install-deps.sh)")
	return ""
}

// rtHostLocalFiles lists every file host-local keeps for network.
func rtHostLocalFiles(t *testing.T, dataDir, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, network))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestDelegateHostLocal: berth macvlan with addresses from the reference
// host-local plugin. The reference plugins Debian ships stop at spec 1.0.0,
// hence the configuration version.
func TestDelegateHostLocal(t *testing.T) {
	requireRoot(t)
	rtHostLocal(t, "1.0.0")
	n := newMacvlanNode(t)
	nodeLinks := n.links(t)
	const network, subnet = "bti-dlg", "198.18.21.0/24"
	hlDir := t.TempDir()
	conf := netConf(t, "1.0.0", network, "macvlan", n.Uplink, "", map[string]any{
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]any{{{"subnet": subnet}}},
			"dataDir": hlDir,
		},
	})

	pods := []pod{n.add(t, conf), n.add(t, conf)}
	for _, p := range pods {
		t.Cleanup(func() {
			_, _ = n.invoke(cniCall{Command: "DEL", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
		})
	}
	for i, p := range pods {
		rtVerifyAttached(t, p.result, p.ns, "eth0", subnet)
		if got := p.ns.ip(t, "-d", "link", "show", "eth0"); !strings.Contains(got, "macvlan mode bridge") {
			t.Errorf("pod %d link is not a bridge-mode macvlan:\n%s", i, got)
		}
		// host-local records "<containerID>\r\n<ifname>" under the address.
		data, err := os.ReadFile(filepath.Join(hlDir, network, p.ip()))
		if err != nil {
			t.Errorf("host-local has no reservation for pod %d's %s: %v", i, p.ip(), err)
		} else if !strings.HasPrefix(string(data), p.id) {
			t.Errorf("host-local reservation of %s is %q, want container %s", p.ip(), data, p.id)
		}
	}
	if pods[0].ip() == pods[1].ip() {
		t.Fatalf("both pods got %s", pods[0].ip())
	}
	if got := allocations(t, hlDir, network); len(got) != 2 {
		t.Errorf("host-local reservations %v, want 2", got)
	}
	if err := pods[0].ns.ping(pods[1].ip()); err != nil {
		t.Error(err)
	}
	if err := pods[1].ns.ping(pods[0].ip()); err != nil {
		t.Error(err)
	}
	for i, p := range pods {
		if err := n.check(t, conf, p); err != nil {
			t.Errorf("CHECK pod %d: %v", i, err)
		}
	}

	// CHECK is delegated too: once host-local has lost pod 2's
	// reservation, berth's CHECK must fail although the link is intact.
	if err := os.Remove(filepath.Join(hlDir, network, pods[1].ip())); err != nil {
		t.Fatal(err)
	}
	if err := n.check(t, conf, pods[1]); err == nil {
		t.Error("CHECK passed although host-local no longer holds pod 2's address")
	}

	for i, p := range pods {
		n.del(t, conf, p)
		if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
			t.Errorf("pod %d links after DEL: %v", i, got)
		}
	}
	if got := allocations(t, hlDir, network); len(got) != 0 {
		t.Errorf("host-local reservations left after DEL: %v", got)
	}
	if got := rtMentions(t, hlDir, pods[0].id, pods[1].id); len(got) != 0 {
		t.Errorf("host-local files still naming the pods after DEL: %v", got)
	}
	for _, f := range rtHostLocalFiles(t, hlDir, network) {
		if f != "lock" && !strings.HasPrefix(f, "last_reserved_ip") {
			t.Errorf("host-local file %s left after DEL", f)
		}
	}
	if got := n.links(t); !slices.Equal(got, nodeLinks) {
		t.Errorf("node links changed: before %v after %v", nodeLinks, got)
	}
}

// TestDelegateHostLocalVersionMismatch: a 1.1.0 configuration delegated to
// a host-local that stops at 1.0.0 fails ADD with host-local's own
// incompatible-version error and leaves nothing in the pod.
func TestDelegateHostLocalVersionMismatch(t *testing.T) {
	requireRoot(t)
	hl := rtHostLocal(t, "1.0.0")
	cmd := exec.Command(hl)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	if out, _ := cmd.Output(); strings.Contains(string(out), `"1.1.0"`) {
		t.Skipf("%s supports 1.1.0; nothing to mismatch", hl)
	}
	n := newMacvlanNode(t)
	nodeLinks := n.links(t)
	const network = "bti-dlgv"
	hlDir := t.TempDir()
	conf := netConf(t, "1.1.0", network, "macvlan", n.Uplink, "", map[string]any{
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]any{{{"subnet": "198.18.21.0/24"}}},
			"dataDir": hlDir,
		},
	})
	p := pod{ns: newNS(t, "p"), id: "ctr-" + randHex(8), ifName: "eth0"}
	_, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: "eth0", Conf: conf})
	wantCode(t, err, 1, "incompatible CNI versions")
	if got := p.ns.links(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("pod links after failed ADD: %v", got)
	}
	if got := allocations(t, hlDir, network); len(got) != 0 {
		t.Errorf("host-local reservations after failed ADD: %v", got)
	}
	if got := n.links(t); !slices.Equal(got, nodeLinks) {
		t.Errorf("node links changed: before %v after %v", nodeLinks, got)
	}
}
