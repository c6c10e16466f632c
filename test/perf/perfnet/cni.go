package perfnet

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
	"strings"
	"time"
)

// Plugin is one CNI plugin binary as a runtime would find it.
type Plugin struct {
	Label   string // "berth" or "ref"
	Path    string // binary to exec
	CNIPath string // CNI_PATH handed to it (delegated IPAM lives here)
}

// CNICall is one invocation: the env a runtime sets plus the conf on stdin.
type CNICall struct {
	Command     string // ADD, DEL, CHECK, VERSION
	ContainerID string
	Netns       string // CNI_NETNS path
	IfName      string
	Conf        []byte
}

// PluginTimeout bounds one plugin call.
const PluginTimeout = 60 * time.Second

// cniError is the CNI error object a plugin prints on failure.
type cniError struct {
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// Exec runs the plugin exactly as a runtime does (fork/exec, CNI_* env,
// conf on stdin, result or error JSON on stdout) in the caller's thread's
// namespace, and returns stdout and the wall time of fork to exit.
func (p Plugin) Exec(ctx context.Context, c CNICall) ([]byte, time.Duration, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A wedged plugin must not hang the whole report.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, PluginTimeout)
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
			msg += " (stderr: " + Tail(s, 400) + ")"
		}
		return out.Bytes(), d, fmt.Errorf("%s plugin %s %s: %v: %s", p.Label, filepath.Base(p.Path), c.Command, err, msg)
	}
	return out.Bytes(), d, nil
}

// ExecIn runs Exec on a thread inside the node namespace nodeNS.
func (p Plugin) ExecIn(ctx context.Context, nodeNS string, c CNICall) (out []byte, d time.Duration, err error) {
	nsErr := InNetns(NSPath(nodeNS), func() error {
		out, d, err = p.Exec(ctx, c)
		return nil
	})
	if nsErr != nil {
		return nil, 0, nsErr
	}
	return out, d, err
}

// Attachment is a pod interface added by a plugin.
type Attachment struct {
	Plugin      Plugin
	NodeNS      string
	PodNS       string
	ContainerID string
	IfName      string
	Conf        []byte
	Result      json.RawMessage
	IP          string
}

// CNIAdd runs ADD for a pod in nodeNS and registers a best-effort DEL for
// cleanup (runtimes call DEL to release IPAM state; the namespaces go away
// anyway).
func (e *Env) CNIAdd(ctx context.Context, p Plugin, nodeNS, podNS, ifname string, conf []byte) (*Attachment, error) {
	a := &Attachment{Plugin: p, NodeNS: nodeNS, PodNS: podNS, ContainerID: ContainerID(), IfName: ifname, Conf: conf}
	out, _, err := p.ExecIn(ctx, nodeNS, CNICall{Command: "ADD", ContainerID: a.ContainerID, Netns: NSPath(podNS), IfName: ifname, Conf: conf})
	// Register the DEL even when ADD failed: a runtime does the same, and a
	// half-done ADD may have left state behind.
	e.OnCleanup(func(ctx context.Context) {
		delConf := WithPrevResult(a.Conf, a.Result)
		if _, _, err := p.ExecIn(ctx, nodeNS, CNICall{Command: "DEL", ContainerID: a.ContainerID, Netns: NSPath(podNS), IfName: ifname, Conf: delConf}); err != nil && e.Verbose {
			e.Logf("cleanup: %v", err)
		}
	})
	if err != nil {
		return nil, err
	}
	a.Result = json.RawMessage(out)
	ipAddr, err := FirstIP(out)
	if err != nil {
		return nil, err
	}
	a.IP = ipAddr
	return a, nil
}

// FirstIP returns ips[0].address of a CNI result without its prefix length.
func FirstIP(result []byte) (string, error) {
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return "", fmt.Errorf("parse ADD result %q: %v", Tail(string(result), 300), err)
	}
	if len(r.IPs) == 0 {
		return "", fmt.Errorf("ADD result has no ips: %s", Tail(string(result), 300))
	}
	ipAddr, _, err := net.ParseCIDR(r.IPs[0].Address)
	if err != nil {
		return "", fmt.Errorf("ADD result ips[0].address %q: %v", r.IPs[0].Address, err)
	}
	return ipAddr.String(), nil
}

// WithPrevResult returns conf with "prevResult" set, as libcni does for DEL
// when it has a cached ADD result. Without a result, conf is returned as is.
func WithPrevResult(conf []byte, result json.RawMessage) []byte {
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

// ContainerID returns 64 hex chars, like a real container ID.
func ContainerID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// MustJSON marshals a conf built from maps; it cannot fail for those.
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Version asks a plugin for its supported spec versions (CNI VERSION).
func (p Plugin) Version(ctx context.Context) string {
	out, _, err := p.Exec(ctx, CNICall{Command: "VERSION", Conf: []byte(`{"cniVersion":"0.4.0"}`)})
	if err != nil {
		return "error: " + Tail(err.Error(), 200)
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

// FindBerth resolves the berth binary; CNI_PATH will be its directory, and
// a runtime finds it there by its type, "berth".
func FindBerth(path string) (Plugin, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Plugin{}, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return Plugin{}, fmt.Errorf("berth binary %s not found (build it: go build -o _output/bin/berth ./cmd/berth-cni): %v", path, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return Plugin{}, fmt.Errorf("berth binary %s is not an executable file", path)
	}
	return Plugin{Label: "berth", Path: abs, CNIPath: filepath.Dir(abs)}, nil
}

// Tail keeps the last n bytes of s, marking the cut.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
