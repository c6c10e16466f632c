// Package perfnet is the shared machinery of berth's network performance
// suites (test/perf/netperf, test/perf/dataplane): network namespaces that
// are always cleaned up, CNI plugins invoked the way a container runtime
// invokes them, iperf3 servers and clients, and the machine description
// every report carries. It needs root at run time; nothing here ever
// creates a link in the root network namespace.
package perfnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NetnsDir is where `ip netns` keeps named namespaces.
const NetnsDir = "/run/netns"

// NSPath is the bind-mount path of a named namespace.
func NSPath(name string) string { return filepath.Join(NetnsDir, name) }

// Env records everything a run creates so that cleanup can undo it all,
// whatever happened: namespaces (deleting one deletes every link in it;
// nothing is ever created in the root namespace), long-running processes,
// CNI attachments and temporary directories.
//
// Prefix names every namespace the Env creates. Only namespaces with this
// prefix are ever deleted, and SweepStale removes ones left behind by a
// run that was killed with SIGKILL.
type Env struct {
	Prefix  string
	Logf    func(format string, args ...any)
	Verbose bool

	mu      sync.Mutex
	netns   []string
	procs   []*Proc
	tmpDirs []string
	dels    []func(context.Context) // best-effort undo steps, run before netns removal
	paths   []string                // removed last (bpffs pin directories)
}

// NewEnv returns an Env for namespaces named prefix*.
func NewEnv(prefix string, logf func(string, ...any), verbose bool) *Env {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Env{Prefix: prefix, Logf: logf, Verbose: verbose}
}

// Proc is a child we started and must stop.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
}

// Run executes a command and returns its trimmed stdout; the error carries
// stderr so failures are self-explaining in the report.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()+" "+out.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// IP runs iproute2's ip.
func IP(ctx context.Context, args ...string) error {
	_, err := Run(ctx, "ip", args...)
	return err
}

// IPN runs `ip -n ns ...`.
func IPN(ctx context.Context, ns string, args ...string) error {
	return IP(ctx, append([]string{"-n", ns}, args...)...)
}

// NSExec runs a command inside a namespace via `ip netns exec`.
func NSExec(ctx context.Context, ns string, args ...string) (string, error) {
	return Run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// AddNetns creates a namespace (name must carry the Env's prefix), records
// it for cleanup and, unless bare, brings its loopback up.
func (e *Env) AddNetns(ctx context.Context, name string, bare bool) error {
	if e.Prefix == "" || !strings.HasPrefix(name, e.Prefix) {
		return fmt.Errorf("refusing to create netns %q without prefix %q", name, e.Prefix)
	}
	if err := IP(ctx, "netns", "add", name); err != nil {
		return err
	}
	e.mu.Lock()
	e.netns = append(e.netns, name)
	e.mu.Unlock()
	if bare {
		return nil
	}
	return IPN(ctx, name, "link", "set", "lo", "up")
}

// TempDir makes a temporary directory that cleanup removes.
func (e *Env) TempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.tmpDirs = append(e.tmpDirs, d)
	e.mu.Unlock()
	return d, nil
}

// RemoveAtEnd registers a path that cleanup removes after everything else
// (after the namespaces, so nothing still uses it), e.g. a bpffs pin
// directory.
func (e *Env) RemoveAtEnd(path string) {
	e.mu.Lock()
	e.paths = append(e.paths, path)
	e.mu.Unlock()
}

// OnCleanup registers a best-effort undo step (a CNI DEL) that runs before
// namespaces are deleted.
func (e *Env) OnCleanup(f func(context.Context)) {
	e.mu.Lock()
	e.dels = append(e.dels, f)
	e.mu.Unlock()
}

// Start launches a long-running process (an iperf3 server) in its own
// process group and records it for cleanup.
func (e *Env) Start(cmd *exec.Cmd) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group of p: SIGTERM, then SIGKILL after 2 s.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
		}
	}
}

// Cleanup undoes everything in reverse order. It never uses the run's
// context (which may be cancelled by SIGINT) and never gives up early. It
// returns the problems it met, for the report.
func (e *Env) Cleanup() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var problems []string
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].Stop()
	}
	e.procs = nil
	for i := len(e.dels) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		e.dels[i](ctx)
		cancel()
	}
	e.dels = nil
	for i := len(e.netns) - 1; i >= 0; i-- {
		if err := DeleteNetns(e.Prefix, e.netns[i]); err != nil {
			problems = append(problems, err.Error())
		}
	}
	e.netns = nil
	for _, d := range e.tmpDirs {
		if err := os.RemoveAll(d); err != nil {
			problems = append(problems, err.Error())
		}
	}
	e.tmpDirs = nil
	for i := len(e.paths) - 1; i >= 0; i-- {
		if err := os.RemoveAll(e.paths[i]); err != nil {
			problems = append(problems, err.Error())
		}
	}
	e.paths = nil
	if left := ListNetns(e.Prefix); len(left) > 0 {
		problems = append(problems, fmt.Sprintf("namespaces still present after cleanup: %s", strings.Join(left, " ")))
	}
	return problems
}

// DeleteNetns kills anything still running inside a namespace named
// prefix* (only our own processes can be there) and deletes it.
func DeleteNetns(prefix, name string) error {
	if prefix == "" || !strings.HasPrefix(name, prefix) {
		return fmt.Errorf("refusing to delete netns %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := Run(ctx, "ip", "netns", "pids", name); err == nil && out != "" {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := IP(ctx, "netns", "del", name); err != nil {
		if _, statErr := os.Stat(NSPath(name)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// ListNetns lists namespaces in /run/netns that carry prefix.
func ListNetns(prefix string) []string {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil || prefix == "" {
		return nil
	}
	var out []string
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), prefix) {
			out = append(out, ent.Name())
		}
	}
	sort.Strings(out)
	return out
}

// SweepStale removes prefix* namespaces left by an earlier run that could
// not clean up (SIGKILL, power loss).
func SweepStale(prefix string, logf func(string, ...any)) {
	for _, n := range ListNetns(prefix) {
		logf("removing stale namespace %s from an earlier run", n)
		if err := DeleteNetns(prefix, n); err != nil {
			logf("warning: %v", err)
		}
	}
}

// RootLinks returns the link names of the root network namespace; a run
// compares them before and after to prove it left nothing behind there.
func RootLinks() map[string]bool {
	ents, err := os.ReadDir("/sys/class/net")
	m := map[string]bool{}
	if err != nil {
		return m
	}
	for _, ent := range ents {
		m[ent.Name()] = true
	}
	return m
}

// LinkMTU reads a link's MTU inside a namespace (0 when unknown).
func LinkMTU(ctx context.Context, ns, dev string) int {
	out, err := Run(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
	if err != nil {
		return 0
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "mtu" {
			n, _ := strconv.Atoi(f[i+1])
			return n
		}
	}
	return 0
}

// InNetns runs fn on a fresh OS thread that has joined the network
// namespace at path. Any process fn starts with os/exec is forked from that
// thread and so inherits the namespace: this is how a container runtime's
// "host" namespace becomes a node netns for a CNI plugin. The thread is
// never unlocked, so Go discards it when fn returns instead of reusing a
// thread that sits in the wrong namespace.
func InNetns(path string, fn func() error) error {
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
