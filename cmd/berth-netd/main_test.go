package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthdev/berth/cni/overlay"
	"github.com/berthdev/berth/cni/overlay/overlaytest"
)

// runMainEnv makes the test binary run berth-netd's main instead of the
// tests, so the root test can exercise the real process: flags, signals,
// exit status.
const runMainEnv = "BERTH_NETD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const waitTimeout = 20 * time.Second

func execute(args ...string) (string, error) {
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestHelp(t *testing.T) {
	out, err := execute("--help")
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, flag := range []string{"--peers-file", "--vni", "--vni-base", "--tenant-registry", "--bpf-pin-dir",
		"--ipam-data-dir", "--network", "--port", "--underlay-ip", "--node-name", "--pod-cidr",
		"--mtu", "--lock-dir", "--metrics-address", "--resync-interval", "--log-level", "--log-format"} {
		if !strings.Contains(out, flag) {
			t.Errorf("--help does not mention %s:\n%s", flag, out)
		}
	}
	for _, def := range []string{`default ":9310"`, `default "/var/lib/berth/tenants.json"`, `default "/sys/fs/bpf/berth"`, `default "/var/lib/cni/berth"`} {
		if !strings.Contains(out, def) {
			t.Errorf("--help does not show the %s:\n%s", def, out)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	peers := filepath.Join(t.TempDir(), "peers.json")
	// --underlay-ip is always given so that no test depends on the host's
	// routes; these all fail before touching the network.
	base := []string{"--peers-file", peers, "--underlay-ip", "198.18.0.1", "--metrics-address", ""}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no peers file", []string{"--underlay-ip", "198.18.0.1"}, "--peers-file is required"},
		{"bad pod CIDR", append(base, "--pod-cidr", "nope"), `--pod-cidr: invalid CIDR "nope"`},
		{"bad underlay IP", []string{"--peers-file", peers, "--underlay-ip", "1.2.3"}, `--underlay-ip: invalid IP "1.2.3"`},
		{"bad VNI", append(base, "--vni", "0"), "--vni 0 out of range"},
		{"VNI leaves no room for tenants", append(base, "--vni", "16777000"), "--vni-base 16777000 leaves no room for 4096 tenants"},
		{"bad VNI base", append(base, "--vni-base", "16777215"), "--vni-base 16777215 leaves no room"},
		{"bad port", append(base, "--port", "70000"), "--port 70000 out of range"},
		{"bad log level", append(base, "--log-level", "loud"), "--log-level"},
		{"bad log format", append(base, "--log-format", "xml"), "--log-format"},
		{"positional argument", append(base, "extra"), "unknown command"},
		{"unknown flag", append(base, "--nope"), "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execute(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q (output: %s)", err, tc.want, out)
			}
		})
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetricsAndProbes(t *testing.T) {
	m := newMetrics()
	h := m.handler()

	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any reconcile = %d, want 503", code)
	}

	m.observe(overlay.Result{Trigger: overlay.TriggerStart, Skipped: true, LoadErr: errors.New("no file")})
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after a skipped reconcile = %d, want 503", code)
	}
	m.observe(overlay.Result{Trigger: overlay.TriggerFile, Stats: overlay.Stats{Added: 6, Peers: 2}, Duration: 3 * time.Millisecond})
	m.observe(overlay.Result{Trigger: overlay.TriggerFile, Stale: true, LoadErr: errors.New("typo"), Stats: overlay.Stats{Peers: 2}})
	m.observe(overlay.Result{Trigger: overlay.TriggerResync, Stale: true, RegistryErr: errors.New("corrupt"), Stats: overlay.Stats{Peers: 2},
		Devices: make([]overlay.DeviceResult, 3)})
	m.observe(overlay.Result{Trigger: overlay.TriggerResync, Err: errors.New("netlink"), Stats: overlay.Stats{Removed: 1, Peers: 2},
		Devices: make([]overlay.DeviceResult, 3)})
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after a successful reconcile = %d, want 200", code)
	}

	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`berth_netd_reconciles_total{result="skipped",trigger="start"} 1`,
		`berth_netd_reconciles_total{result="success",trigger="file"} 1`,
		`berth_netd_reconciles_total{result="stale",trigger="file"} 1`,
		`berth_netd_reconciles_total{result="stale",trigger="resync"} 1`,
		`berth_netd_reconciles_total{result="error",trigger="resync"} 1`,
		`berth_netd_reconcile_errors_total{stage="load"} 2`,
		`berth_netd_reconcile_errors_total{stage="registry"} 1`,
		`berth_netd_reconcile_errors_total{stage="apply"} 1`,
		`berth_netd_reconcile_duration_seconds_count 5`,
		`berth_netd_tenant_devices 3`,
		`berth_netd_bpf_available 0`,
		`berth_netd_stale_endpoints_removed_total 0`,
		`berth_netd_peers 2`,
		`berth_netd_entries_changed_total{op="added"} 6`,
		`berth_netd_entries_changed_total{op="removed"} 1`,
		`berth_netd_last_success_timestamp_seconds `,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// httpGetIn fetches url from inside ns. The connection is dialled on the
// goroutine that Run locked into the namespace (http.Client would dial from
// another goroutine, i.e. from the wrong namespace).
func httpGetIn(ns *overlaytest.NetNS, addr, path string) (int, string, error) {
	var code int
	var body string
	err := ns.Run(func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
		return err
	})
	return code, body, err
}

// TestDaemonInNetns runs berth-netd as a real process in a throwaway node
// namespace: it must find the underlay through the default route, program
// the overlay, serve metrics, follow the peers file, and exit 0 on SIGTERM
// leaving the device in place.
func TestDaemonInNetns(t *testing.T) {
	overlaytest.RequireRoot(t)
	n1 := overlaytest.NewNetNS(t, "n1")
	n2 := overlaytest.NewNetNS(t, "n2")
	overlaytest.Veth(t, n1, "u0", "198.18.0.1/24", n2, "u0", "198.18.0.2/24")
	n1.IP(t, "route", "add", "default", "via", "198.18.0.254", "dev", "u0")

	dir := t.TempDir()
	peers := filepath.Join(dir, "peers.json")
	writeFile(t, peers, `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
		{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"}]`)

	const metricsAddr = "127.0.0.1:19310"
	cmd := exec.Command("ip", "netns", "exec", n1.Name, os.Args[0],
		"--peers-file", peers, "--node-name", "n1", "--lock-dir", filepath.Join(dir, "lock"),
		// Nothing of the host's berth state: a private registry, no BPF.
		"--tenant-registry", filepath.Join(dir, "tenants.json"), "--bpf-pin-dir", "",
		"--metrics-address", metricsAddr, "--resync-interval", "1h", "--log-level", "debug")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var logs lockedBuffer
	cmd.Stdout = &logs
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("berth-netd output:\n%s", logs.String())
		}
	})

	waitFor(t, "route to n2's pod CIDR", func() bool {
		return strings.Contains(n1.IP(t, "route", "show"), "198.18.65.0/24 via 198.18.65.0 dev berth.1 onlink")
	})
	waitFor(t, "readiness", func() bool {
		code, _, err := httpGetIn(n1, metricsAddr, "/readyz")
		return err == nil && code == http.StatusOK
	})
	code, body, err := httpGetIn(n1, metricsAddr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{`berth_netd_reconciles_total{result="success",trigger="start"} 1`, "berth_netd_peers 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A new peer shows up via the file watch (resync is 1h).
	writeFile(t, peers+".tmp", `[{"nodeName":"n1","underlayIP":"198.18.0.1","podCIDR":"198.18.64.0/24"},
		{"nodeName":"n2","underlayIP":"198.18.0.2","podCIDR":"198.18.65.0/24"},
		{"nodeName":"n3","underlayIP":"198.18.0.3","podCIDR":"198.18.66.0/24"}]`)
	if err := os.Rename(peers+".tmp", peers); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route to n3's pod CIDR", func() bool {
		return strings.Contains(n1.IP(t, "route", "show"), "198.18.66.0/24 via 198.18.66.0 dev berth.1 onlink")
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Fatalf("berth-netd exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("berth-netd did not exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "underlayIP=198.18.0.1") {
		t.Errorf("berth-netd did not pick the default-route link's address as underlay IP")
	}
	routes := n1.IP(t, "route", "show")
	if !strings.Contains(routes, "dev berth.1") {
		t.Errorf("overlay routes are gone after SIGTERM:\n%s", routes)
	}
	n1.IP(t, "link", "show", "berth.1") // fails the test if the device is gone
}

// lockedBuffer collects the daemon's output, written by exec's copying
// goroutine while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestInstallFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("#!plugin v2"), 0o644)
	dst := filepath.Join(dir, "opt", "cni", "bin", "berth")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	os.WriteFile(dst, []byte("v1"), 0o755)
	if err := installFile(src, dst); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	st, _ := os.Stat(dst)
	if string(b) != "#!plugin v2" || st.Mode().Perm() != 0o755 {
		t.Errorf("installed %q mode %v", b, st.Mode())
	}
	ents, _ := os.ReadDir(filepath.Dir(dst))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
