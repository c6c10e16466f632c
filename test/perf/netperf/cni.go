package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on a fresh OS thread that has joined the network
// namespace at path. Any process fn starts with os/exec is forked from that
// thread and so inherits the namespace: this is how a container runtime's
// "host" namespace becomes a node netns for a CNI plugin. The thread is
// never unlocked, so Go discards it when fn returns instead of reusing a
// thread that sits in the wrong namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %v", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// plugin is one CNI plugin binary as a runtime would find it.
type plugin struct {
	Label   string // "berth" or "ref"
	Path    string // binary to exec
	CNIPath string // CNI_PATH handed to it (delegated IPAM lives here)
}

// cniCall is one invocation: the env a runtime sets plus the conf on stdin.
type cniCall struct {
	Command     string // ADD, DEL, CHECK, VERSION
	ContainerID string
	Netns       string // CNI_NETNS path
	IfName      string
	Conf        []byte
}

// pluginTimeout bounds one plugin call.
const pluginTimeout = 60 * time.Second

// cniError is the CNI error object a plugin prints on failure.
type cniError struct {
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// exec runs the plugin exactly as a runtime does (fork/exec, CNI_* env,
// conf on stdin, result or error JSON on stdout) in the caller's thread's
// namespace, and returns stdout and the wall time of fork to exit.
func (p plugin) exec(ctx context.Context, c cniCall) ([]byte, time.Duration, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A wedged plugin must not hang the whole report.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pluginTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, p.Path)
	env := make([]string, 0, len(os.Environ())+6)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"CNI_COMMAND="+c.Command,
		"CNI_CONTAINERID="+c.ContainerID,
		"CNI_NETNS="+c.Netns,
		"CNI_IFNAME="+c.IfName,
		"CNI_PATH="+p.CNIPath,
	)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(c.Conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		msg := strings.TrimSpace(out.String())
		var ce cniError
		if json.Unmarshal(out.Bytes(), &ce) == nil && ce.Msg != "" {
			msg = fmt.Sprintf("CNI error %d: %s", ce.Code, ce.Msg)
			if ce.Details != "" {
				msg += ": " + ce.Details
			}
		}
		if s := strings.TrimSpace(errb.String()); s != "" {
			msg += " (stderr: " + tail(s, 400) + ")"
		}
		return out.Bytes(), d, fmt.Errorf("%s plugin %s %s: %v: %s", p.Label, filepath.Base(p.Path), c.Command, err, msg)
	}
	return out.Bytes(), d, nil
}

// execIn runs exec on a thread inside the node namespace nodeNS.
func (p plugin) execIn(ctx context.Context, nodeNS string, c cniCall) (out []byte, d time.Duration, err error) {
	nsErr := inNetns(nsPath(nodeNS), func() error {
		out, d, err = p.exec(ctx, c)
		return nil
	})
	if nsErr != nil {
		return nil, 0, nsErr
	}
	return out, d, err
}

// attachment is a pod interface added by a plugin.
type attachment struct {
	Plugin      plugin
	NodeNS      string
	PodNS       string
	ContainerID string
	IfName      string
	Conf        []byte
	Result      json.RawMessage
	IP          string
}

// add runs ADD for a pod in nodeNS and registers a best-effort DEL for
// cleanup (runtimes call DEL to release IPAM state; the namespaces go away
// anyway).
func (e *env) cniAdd(ctx context.Context, p plugin, nodeNS, podNS, ifname string, conf []byte) (*attachment, error) {
	a := &attachment{Plugin: p, NodeNS: nodeNS, PodNS: podNS, ContainerID: containerID(), IfName: ifname, Conf: conf}
	out, _, err := p.execIn(ctx, nodeNS, cniCall{Command: "ADD", ContainerID: a.ContainerID, Netns: nsPath(podNS), IfName: ifname, Conf: conf})
	// Register the DEL even when ADD failed: a runtime does the same, and a
	// half-done ADD may have left state behind.
	e.onCleanup(func(ctx context.Context) {
		delConf := withPrevResult(a.Conf, a.Result)
		if _, _, err := p.execIn(ctx, nodeNS, cniCall{Command: "DEL", ContainerID: a.ContainerID, Netns: nsPath(podNS), IfName: ifname, Conf: delConf}); err != nil && e.verbose {
			e.logf("cleanup: %v", err)
		}
	})
	if err != nil {
		return nil, err
	}
	a.Result = json.RawMessage(out)
	ipAddr, err := firstIP(out)
	if err != nil {
		return nil, err
	}
	a.IP = ipAddr
	return a, nil
}

// firstIP returns ips[0].address without its prefix length.
func firstIP(result []byte) (string, error) {
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return "", fmt.Errorf("parse ADD result %q: %v", tail(string(result), 300), err)
	}
	if len(r.IPs) == 0 {
		return "", fmt.Errorf("ADD result has no ips: %s", tail(string(result), 300))
	}
	ipAddr, _, err := net.ParseCIDR(r.IPs[0].Address)
	if err != nil {
		return "", fmt.Errorf("ADD result ips[0].address %q: %v", r.IPs[0].Address, err)
	}
	return ipAddr.String(), nil
}

// withPrevResult returns conf with "prevResult" set, as libcni does for DEL
// when it has a cached ADD result. Without a result, conf is returned as is.
func withPrevResult(conf []byte, result json.RawMessage) []byte {
	if len(result) == 0 || !json.Valid(result) {
		return conf
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(conf, &m) != nil {
		return conf
	}
	m["prevResult"] = result
	b, err := json.Marshal(m)
	if err != nil {
		return conf
	}
	return b
}

// containerID returns 64 hex chars, like a real container ID.
func containerID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mustJSON marshals a conf built from maps; it cannot fail for those.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// pluginVersion asks a plugin for its supported spec versions (CNI VERSION).
func (p plugin) version(ctx context.Context) string {
	out, _, err := p.exec(ctx, cniCall{Command: "VERSION", Conf: []byte(`{"cniVersion":"0.4.0"}`)})
	if err != nil {
		return "error: " + tail(err.Error(), 200)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if json.Unmarshal(out, &v) != nil {
		return strings.TrimSpace(string(out))
	}
	return "supports " + strings.Join(v.SupportedVersions, ",")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
