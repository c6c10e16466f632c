package critest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthdev/berth/test/crienv"
)

// skipSpecs are skipped in BOTH runs, each with its reason, so the two
// pass counts compare like with like.
var skipSpecs = map[string]string{
	"digest": "the image is named by an upstream multi-arch index digest, which cannot be rebuilt offline byte for byte",
}

// TestCritest runs critest v1.36 against berth-cri and then against
// containerd 2.2's built-in CRI on the same containerd build, images
// (local registry, hosts.toml mirrors) and CNI config, and writes
// test/perf/results/critest.{json,md}. It is `make critest`; it only runs
// with BERTH_CRITEST=1.
func TestCritest(t *testing.T) {
	if os.Getenv("BERTH_CRITEST") == "" {
		t.Skip("set BERTH_CRITEST=1 (make critest) to run critest")
	}
	tools := crienv.Require(t)
	_, hostsDir := crienv.EnsureRegistry(t)
	// The mount propagation specs need "/" to be a shared mount, as it is
	// on every systemd host; this machine boots with a private "/".
	if out, err := exec.Command("mount", "--make-rshared", "/").CombinedOutput(); err != nil {
		t.Fatalf("mount --make-rshared /: %v %s", err, out)
	}
	net := crienv.NewBridgeNetwork(t)
	parallel := os.Getenv("CRITEST_PARALLEL")
	if parallel == "" {
		parallel = "1"
	}
	resultsDir := filepath.Join(crienv.RepoRoot(t), "test", "perf", "results")

	// Raw logs and ginkgo reports are kept for reading after the run.
	rawDir := filepath.Join(crienv.RepoRoot(t), "_output", "critest")
	if err := os.MkdirAll(rawDir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, name, sock string, extraArgs ...string) Summary {
		report := filepath.Join(rawDir, name+".json")
		var skips []string
		for k := range skipSpecs {
			skips = append(skips, k)
		}
		args := []string{"--runtime-endpoint", "unix://" + sock, "--image-endpoint", "unix://" + sock,
			"--ginkgo.skip", strings.Join(skips, "|"), "--ginkgo.json-report", report, "--ginkgo.no-color"}
		if parallel != "1" {
			// critest then re-runs itself through the ginkgo CLI, which
			// must be on PATH (it is next to critest).
			args = append(args, "-parallel", parallel)
		}
		if f := os.Getenv("CRITEST_FOCUS"); f != "" {
			args = append(args, "--ginkgo.focus", f)
		}
		args = append(args, extraArgs...)
		cmd := exec.Command(tools.Critest, args...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tools.Critest)+":"+os.Getenv("PATH"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		logPath := filepath.Join(rawDir, name+".log")
		os.WriteFile(logPath, out.Bytes(), 0o644)
		t.Logf("critest against %s took %s (exit: %v); log %s", name, time.Since(start).Round(time.Second), err, logPath)
		s, perr := ParseFile(name, report)
		if perr != nil {
			tail := out.String()
			if len(tail) > 4000 {
				tail = tail[len(tail)-4000:]
			}
			t.Fatalf("no critest report for %s: %v\n%s", name, perr, tail)
		}
		t.Log(s.Totals())
		return s
	}

	// Each runtime in its own subtest, so its daemons are gone (cleanups)
	// before the other starts.
	var berth, reference, berthWS, referenceWS Summary
	// The streaming specs again with websocket instead of SPDY, the
	// transport newer kubectl versions prefer.
	wsArgs := []string{"--ginkgo.focus", "Streaming", "-websocket-exec", "-websocket-attach", "-websocket-portforward"}
	t.Run("berth-cri", func(t *testing.T) {
		// berth-cri on a containerd whose CRI plugin is disabled.
		ctd := crienv.StartContainerd(t, crienv.ContainerdOptions{})
		b := crienv.StartBerthCRI(t, crienv.BerthCRIOptions{Containerd: ctd, HostsDir: hostsDir,
			CNIConfDir: net.ConfDir, CNIBinDirs: net.BinDirs})
		berth = run(t, "berth-cri", b.Socket())
		berthWS = run(t, "berth-cri-websocket", b.Socket(), wsArgs...)
	})
	t.Run("containerd", func(t *testing.T) {
		// containerd's own CRI: same binaries, images, mirrors and network.
		ref := crienv.StartContainerd(t, crienv.ContainerdOptions{WithCRI: true, HostsDir: hostsDir,
			CNIConfDir: net.ConfDir, CNIBinDirs: net.BinDirs})
		reference = run(t, "containerd", ref.Address())
		referenceWS = run(t, "containerd-websocket", ref.Address(), wsArgs...)
	})

	if t.Failed() {
		return
	}
	meta := map[string]string{
		"critest":    "cri-tools v1.36.0 (" + parallel + " ginkgo node(s))",
		"containerd": "v2.2.9 (same build for both; CRI plugin disabled under berth-cri)",
		"runc":       "v1.4.3",
		"network":    "reference bridge + host-local + portmap + loopback (same conflist for both)",
		"kernel":     kernelRelease(),
		"date":       time.Now().UTC().Format(time.RFC3339),
	}
	meta["websocket"] = "critest 1.36's websocket client (client-go) asks only for the v5.channel.k8s.io protocol; the streaming server both runtimes use (k8s.io/cri-streaming, as kubelet's runtimes) accepts websocket v1-v4 and SPDY, so the handshake is refused (403) for both. In clusters the API server translates websocket to SPDY before it reaches the runtime. berth-cri's v4 websocket exec is tested in test/integration/cri (TestExecWebsocket)."
	for k, v := range skipSpecs {
		meta["skipped in both runs: "+k] = v
	}
	var md bytes.Buffer
	berthWS.Runtime, referenceWS.Runtime = "berth-cri, Streaming specs over websocket", "containerd, Streaming specs over websocket"
	Markdown(&md, berth, reference, meta, berthWS, referenceWS)
	js, _ := json.MarshalIndent(map[string]any{"meta": meta, "berth": berth, "reference": reference,
		"berthWebsocket": berthWS, "referenceWebsocket": referenceWS}, "", "  ")
	if os.Getenv("CRITEST_FOCUS") == "" {
		os.MkdirAll(resultsDir, 0o755)
		os.WriteFile(filepath.Join(resultsDir, "critest.md"), md.Bytes(), 0o644)
		os.WriteFile(filepath.Join(resultsDir, "critest.json"), js, 0o644)
	}
	fmt.Println(berth.Totals())
	fmt.Println(reference.Totals())
	fmt.Print(md.String())
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
