// Package integration runs berth's binaries exactly as a container runtime
// does — CNI_* environment, configuration on stdin, result on stdout —
// against real network namespaces, veth pairs, macvlan and VXLAN links.
//
// The tests need root. Every namespace and link they create is named with
// the "bti" prefix and removed in t.Cleanup, so a failing test leaves nothing
// behind. Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking space);
// no test touches the machine's own NICs.
package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

var (
	berthBin string // the freshly built plugin
	binDir   string // CNI_PATH entry holding it
	cniPath  string // binDir plus the reference plugins, for delegated IPAM
	skipWhy  string // non-empty: every test skips with this reason
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv("BERTH_SKIP_INTEGRATION") != "":
		skipWhy = "BERTH_SKIP_INTEGRATION is set"
	case os.Geteuid() != 0:
		skipWhy = "integration tests need root (network namespaces, links)"
	}
	if _, err := exec.LookPath("ip"); skipWhy == "" && err != nil {
		skipWhy = "iproute2 (ip) is not installed; run hack/install-deps.sh"
	}
	code := 0
	if skipWhy == "" {
		dir, err := os.MkdirTemp("", "berth-it-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binDir = dir
		berthBin = filepath.Join(dir, "berth")
		// Build from source so the tests always exercise this tree.
		build := exec.Command("go", "build", "-o", berthBin, "github.com/berthdev/berth/cmd/berth-cni")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building berth-cni:", err)
			os.Exit(1)
		}
		cniPath = binDir + ":/usr/lib/cni:/opt/cni/bin"
		code = m.Run()
		os.RemoveAll(dir)
	} else {
		code = m.Run()
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// run executes a command and fails the test on error, returning stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netNS is a named network namespace under /run/netns.
type netNS struct{ Name string }

func (n netNS) Path() string { return "/run/netns/" + n.Name }

// newNS creates a namespace "bti<tag><rand>" and removes it at cleanup.
// Names stay short because link names derived from them must fit in 15
// characters.
func newNS(t *testing.T, tag string) netNS {
	t.Helper()
	name := "bti" + tag + randHex(3)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	n := netNS{Name: name}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs `ip -n <ns> args...`.
func (n netNS) ip(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// exec runs a command inside the namespace. nsenter is used rather than
// `ip netns exec` because the latter remounts /sys, which later BPF pinning
// tests cannot tolerate.
func (n netNS) exec(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// ping sends a few echo requests from n to addr and reports success.
func (n netNS) ping(addr string) error {
	out, err := n.exec("ping", "-c", "2", "-i", "0.2", "-W", "2", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", addr, n.Name, err, out)
	}
	return nil
}

// links lists link names in the namespace.
func (n netNS) links(t *testing.T) []string {
	t.Helper()
	var out []struct {
		IfName string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(n.ip(t, "-j", "link", "show")), &out); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(out))
	for _, l := range out {
		names = append(names, l.IfName)
	}
	return names
}

// node is a test "host": a namespace with an uplink the plugin uses as
// master (macvlan) or underlay (vxlan).
type node struct {
	netNS
	Uplink string
}

// newMacvlanNode makes a node whose master is one end of a veth pair that
// lives entirely inside the node, so no real NIC is ever a parent.
func newMacvlanNode(t *testing.T) node {
	t.Helper()
	n := newNS(t, "n")
	n.ip(t, "link", "add", "btiup0", "type", "veth", "peer", "name", "btiup1")
	n.ip(t, "link", "set", "btiup0", "up")
	n.ip(t, "link", "set", "btiup1", "up")
	return node{netNS: n, Uplink: "btiup0"}
}

// newMacvlanPair makes two nodes whose macvlan masters are the two ends of
// one veth pair: one L2 segment between the nodes, as on a switch.
func newMacvlanPair(t *testing.T) (node, node) {
	t.Helper()
	a, b := newNS(t, "a"), newNS(t, "b")
	peer := "btim" + randHex(3)
	a.ip(t, "link", "add", "btimv", "type", "veth", "peer", "name", peer, "netns", b.Name)
	b.ip(t, "link", "set", peer, "name", "btimv")
	a.ip(t, "link", "set", "btimv", "up")
	b.ip(t, "link", "set", "btimv", "up")
	return node{netNS: a, Uplink: "btimv"}, node{netNS: b, Uplink: "btimv"}
}

// newVXLANPair makes two nodes joined by a veth underlay 198.18.0.1/24 and
// 198.18.0.2/24 (the last octet pair varies per test to keep runs apart in
// captures; addresses live in separate namespaces so they never clash).
func newVXLANPair(t *testing.T) (node, node) {
	t.Helper()
	a, b := newNS(t, "a"), newNS(t, "b")
	peer := "btiu" + randHex(3)
	a.ip(t, "link", "add", "btiund", "type", "veth", "peer", "name", peer, "netns", b.Name)
	b.ip(t, "link", "set", peer, "name", "btiund")
	a.ip(t, "addr", "add", "198.18.0.1/24", "dev", "btiund")
	b.ip(t, "addr", "add", "198.18.0.2/24", "dev", "btiund")
	a.ip(t, "link", "set", "btiund", "up")
	b.ip(t, "link", "set", "btiund", "up")
	return node{netNS: a, Uplink: "btiund"}, node{netNS: b, Uplink: "btiund"}
}

// cniCall is one plugin invocation.
type cniCall struct {
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Conf        []byte
}

// cniError is the plugin's JSON error on stdout.
type cniError struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
	Stderr  string `json:"-"`
}

func (e *cniError) Error() string {
	return fmt.Sprintf("code %d: %s (%s) stderr=%s", e.Code, e.Msg, e.Details, e.Stderr)
}

// invoke runs the plugin binary in node's namespace, as a runtime would.
func (n node) invoke(c cniCall) ([]byte, error) {
	cmd := n.exec(berthBin)
	cmd.Env = []string{
		"CNI_COMMAND=" + c.Command,
		"CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.Netns,
		"CNI_IFNAME=" + c.IfName,
		"CNI_PATH=" + cniPath,
		"CNI_ARGS=" + c.Args,
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	cmd.Stdin = bytes.NewReader(c.Conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ce := &cniError{Stderr: stderr.String()}
			if jerr := json.Unmarshal(stdout.Bytes(), ce); jerr != nil {
				return nil, fmt.Errorf("plugin failed without a JSON error: %v; stdout=%q stderr=%q", err, stdout.String(), stderr.String())
			}
			return nil, ce
		}
		return nil, err
	}
	return stdout.Bytes(), nil
}

// pod is one attachment made by add.
type pod struct {
	ns     netNS
	node   netNS  // the node namespace the plugin ran in
	args   string // CNI_ARGS used at ADD, repeated on CHECK and DEL
	id     string
	ifName string
	result *current.Result
	raw    []byte
}

func (p pod) ip() string { return p.result.IPs[0].Address.IP.String() }

// add attaches a fresh pod namespace and fails the test on error.
func (n node) add(t *testing.T, conf []byte) pod {
	t.Helper()
	p := pod{ns: newNS(t, "p"), node: n.netNS, id: "ctr-" + randHex(8), ifName: "eth0"}
	raw, err := n.invoke(cniCall{Command: "ADD", ContainerID: p.id, Netns: p.ns.Path(), IfName: p.ifName, Conf: conf})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	p.raw = raw
	p.result = parseResult(t, raw)
	return p
}

func parseResult(t *testing.T, raw []byte) *current.Result {
	t.Helper()
	// create.Create honours the result's own cniVersion (0.3.x results
	// differ in shape), then everything is compared as a current result.
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("parse result %s: %v", raw, err)
	}
	r, err := create.Create(v.CNIVersion, raw)
	if err != nil {
		t.Fatalf("parse result %s: %v", raw, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// withPrev returns conf with prevResult set, as runtimes do for CHECK/DEL.
func withPrev(t *testing.T, conf []byte, prev []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	var p any
	if err := json.Unmarshal(prev, &p); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = p
	out, _ := json.Marshal(m)
	return out
}

// setJSON returns conf with top-level key k set to v.
func setJSON(t *testing.T, conf []byte, k string, v any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m[k] = v
	out, _ := json.Marshal(m)
	return out
}

func (n node) check(t *testing.T, conf []byte, p pod) error {
	t.Helper()
	_, err := n.invoke(cniCall{Command: "CHECK", ContainerID: p.id, Netns: p.ns.Path(), IfName: p.ifName, Args: p.args, Conf: withPrev(t, conf, p.raw)})
	return err
}

func (n node) del(t *testing.T, conf []byte, p pod) {
	t.Helper()
	if _, err := n.invoke(cniCall{Command: "DEL", ContainerID: p.id, Netns: p.ns.Path(), IfName: p.ifName, Args: p.args, Conf: withPrev(t, conf, p.raw)}); err != nil {
		t.Fatalf("DEL %s: %v", p.id, err)
	}
}

// allocations lists the per-address files of network name under dataDir:
// berth's built-in store and host-local both name a reserved address's
// file after the address (IPv6 with '_' for ':').
func allocations(t *testing.T, dataDir, name string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// Only address records count; the store keeps other bookkeeping
	// (lock, cursor, indexes) beside them.
	var out []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(strings.ReplaceAll(e.Name(), "_", ":")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// wantCode asserts err is a CNI error with the given code whose message
// mentions substr.
func wantCode(t *testing.T, err error, code uint, substr string) {
	t.Helper()
	var ce *cniError
	if !errors.As(err, &ce) {
		t.Fatalf("want CNI error code %d, got %v", code, err)
	}
	if ce.Code != code {
		t.Errorf("code = %d (%s: %s), want %d", ce.Code, ce.Msg, ce.Details, code)
	}
	if !strings.Contains(ce.Msg, substr) {
		t.Errorf("message %q does not mention %q", ce.Msg, substr)
	}
}

func mustUnmarshal(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

// jsonField returns top-level key k of conf.
func jsonField(t *testing.T, conf []byte, k string) any {
	t.Helper()
	var m map[string]any
	mustUnmarshal(t, conf, &m)
	return m[k]
}

func mergeMap(t *testing.T, base any, extra map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	if m, ok := base.(map[string]any); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// buildNetd builds berth-netd once per test binary.
func buildNetd(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "berth-netd")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	out, err := exec.Command("go", "build", "-o", path, "github.com/berthdev/berth/cmd/berth-netd").CombinedOutput()
	if err != nil {
		t.Fatalf("build berth-netd: %v\n%s", err, out)
	}
	return path
}
