package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berthdev/berth/test/perf/perfnet"
)

// This file drives plugins the way containerd and CRI-O do: through
// libcni, with a conflist, capability arguments for "bandwidth", results
// cached by the library and handed back to DEL. Each call runs on a thread
// inside the node namespace, so the plugins (and everything they exec)
// see that namespace as "the host".

// bandwidth is the CNI "bandwidth" capability argument (bit/s and bits).
// A zero burst is left out, as a runtime that sets none would.
type bandwidth struct {
	IngressRate, IngressBurst, EgressRate, EgressBurst uint64
}

func (b *bandwidth) capability() map[string]any {
	m := map[string]any{}
	for k, v := range map[string]uint64{"ingressRate": b.IngressRate, "ingressBurst": b.IngressBurst,
		"egressRate": b.EgressRate, "egressBurst": b.EgressBurst} {
		if v > 0 {
			m[k] = v
		}
	}
	return m
}

// stderrTail keeps the end of the plugins' stderr for error messages
// instead of spraying it over the run's log.
type stderrTail struct {
	mu  sync.Mutex
	buf []byte
}

func (s *stderrTail) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	if len(s.buf) > 4096 {
		s.buf = s.buf[len(s.buf)-2048:]
	}
	return len(p), nil
}

func (s *stderrTail) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := strings.TrimSpace(string(s.buf))
	s.buf = nil
	return out
}

// network is one conflist on one node, as a runtime has it loaded.
type network struct {
	label  string // "berth" or "ref", for errors
	node   string // node netns
	cfg    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	stderr *stderrTail
	env    *perfnet.Env
}

// newNetwork parses a conflist; paths is CNI_PATH, cacheDir libcni's
// result cache.
func newNetwork(env *perfnet.Env, label, node string, paths []string, cacheDir string, conflist []byte) (*network, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("conflist %s: %w", label, err)
	}
	st := &stderrTail{}
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: st}}
	return &network{label: label, node: node, cfg: libcni.NewCNIConfigWithCacheDir(paths, cacheDir, ex), list: list, stderr: st, env: env}, nil
}

// pod is one attachment.
type pod struct {
	NS      string `json:"netns"`
	IP      string `json:"ip"`
	HostIf  string `json:"hostInterface,omitempty"` // host-side veth, when the plugin has one
	net     *network
	rt      *libcni.RuntimeConf
	deleted bool
}

func (n *network) runtimeConf(podNS string, bw *bandwidth) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: perfnet.ContainerID(),
		NetNS:       perfnet.NSPath(podNS),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bpdp"}, {"K8S_POD_NAME", podNS}},
	}
	if bw != nil {
		rt.CapabilityArgs = map[string]interface{}{"bandwidth": bw.capability()}
	}
	return rt
}

func (n *network) wrap(err error, verb string) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s %s: %v", n.label, verb, err)
	if s := n.stderr.take(); s != "" {
		msg += " (stderr: " + perfnet.Tail(s, 400) + ")"
	}
	return fmt.Errorf("%s", msg)
}

// add attaches podNS and returns the pod and the wall time of
// AddNetworkList (every plugin of the chain plus libcni's cache write). A
// DEL is registered for cleanup whatever happens, as a runtime would.
func (n *network) add(ctx context.Context, podNS string, bw *bandwidth) (*pod, time.Duration, error) {
	rt := n.runtimeConf(podNS, bw)
	p := &pod{NS: podNS, net: n, rt: rt}
	n.env.OnCleanup(func(ctx context.Context) {
		if !p.deleted {
			_, _ = n.del(ctx, p)
		}
	})
	var d time.Duration
	var res *current.Result
	err := perfnet.InNetns(perfnet.NSPath(n.node), func() error {
		cctx, cancel := context.WithTimeout(ctx, perfnet.PluginTimeout)
		defer cancel()
		start := time.Now()
		r, err := n.cfg.AddNetworkList(cctx, n.list, rt)
		d = time.Since(start)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	n.stderr.take()
	if err != nil {
		return nil, d, n.wrap(err, "ADD")
	}
	if len(res.IPs) == 0 {
		b, _ := json.Marshal(res)
		return nil, d, fmt.Errorf("%s ADD: result has no ips: %s", n.label, perfnet.Tail(string(b), 300))
	}
	p.IP = res.IPs[0].Address.IP.String()
	for _, itf := range res.Interfaces {
		if itf.Sandbox == "" && p.HostIf == "" && !strings.HasPrefix(itf.Name, "bwp") {
			p.HostIf = itf.Name
		}
	}
	return p, d, nil
}

// del detaches p (libcni feeds the cached ADD result as prevResult).
func (n *network) del(ctx context.Context, p *pod) (time.Duration, error) {
	var d time.Duration
	err := perfnet.InNetns(perfnet.NSPath(n.node), func() error {
		cctx, cancel := context.WithTimeout(ctx, perfnet.PluginTimeout)
		defer cancel()
		start := time.Now()
		err := n.cfg.DelNetworkList(cctx, n.list, p.rt)
		d = time.Since(start)
		return err
	})
	if err == nil {
		p.deleted = true
	}
	return d, n.wrap(err, "DEL")
}
