package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// nsPrefix names every network namespace this program creates. Only
// namespaces with this prefix are ever deleted, and the start-of-run sweep
// removes ones left behind by a run that was killed with SIGKILL.
const nsPrefix = "bperf-"

const netnsDir = "/run/netns"

// env records everything the run creates so that cleanup can undo it all,
// whatever happened: namespaces (deleting one deletes every link in it;
// nothing is ever created in the root namespace), long-running processes,
// CNI attachments and temporary directories.
type env struct {
	mu      sync.Mutex
	netns   []string
	procs   []*proc
	tmpDirs []string
	dels    []func(context.Context) // best-effort CNI DELs, run before netns removal
	logf    func(format string, args ...any)
	verbose bool
}

// proc is a child we started and must stop.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// run executes a command and returns its trimmed stdout; the error carries
// stderr so failures are self-explaining in the report.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()+" "+out.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// ip runs iproute2's ip.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "ip", args...)
	return err
}

// ipn runs `ip -n ns ...`.
func ipn(ctx context.Context, ns string, args ...string) error {
	return ip(ctx, append([]string{"-n", ns}, args...)...)
}

// nsExec runs a command inside a namespace via `ip netns exec`.
func nsExec(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// addNetns creates a namespace (name must carry nsPrefix), records it for
// cleanup and, unless bare, brings its loopback up.
func (e *env) addNetns(ctx context.Context, name string, bare bool) error {
	if !strings.HasPrefix(name, nsPrefix) {
		return fmt.Errorf("refusing to create netns %q without prefix %q", name, nsPrefix)
	}
	if err := ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	e.mu.Lock()
	e.netns = append(e.netns, name)
	e.mu.Unlock()
	if bare {
		return nil
	}
	return ipn(ctx, name, "link", "set", "lo", "up")
}

// tempDir makes a temporary directory that cleanup removes.
func (e *env) tempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.tmpDirs = append(e.tmpDirs, d)
	e.mu.Unlock()
	return d, nil
}

// onCleanup registers a best-effort undo step (a CNI DEL) that runs before
// namespaces are deleted.
func (e *env) onCleanup(f func(context.Context)) {
	e.mu.Lock()
	e.dels = append(e.dels, f)
	e.mu.Unlock()
}

// start launches a long-running process (an iperf3 server) in its own
// process group and records it for cleanup.
func (e *env) start(cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group of p: SIGTERM, then SIGKILL after 2 s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
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

// cleanup undoes everything in reverse order. It never uses the run's
// context (which may be cancelled by SIGINT) and never gives up early.
func (e *env) cleanup() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var problems []string
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
	e.procs = nil
	for i := len(e.dels) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		e.dels[i](ctx)
		cancel()
	}
	e.dels = nil
	for i := len(e.netns) - 1; i >= 0; i-- {
		if err := deleteNetns(e.netns[i]); err != nil {
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
	if left := listOurNetns(); len(left) > 0 {
		problems = append(problems, fmt.Sprintf("namespaces still present after cleanup: %s", strings.Join(left, " ")))
	}
	return problems
}

// deleteNetns kills anything still running inside a bperf- namespace
// (only our own iperf3 processes can be there) and deletes it.
func deleteNetns(name string) error {
	if !strings.HasPrefix(name, nsPrefix) {
		return fmt.Errorf("refusing to delete netns %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := run(ctx, "ip", "netns", "pids", name); err == nil && out != "" {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := ip(ctx, "netns", "del", name); err != nil {
		if _, statErr := os.Stat(nsPath(name)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// listOurNetns lists namespaces in /run/netns that carry our prefix.
func listOurNetns() []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), nsPrefix) {
			out = append(out, ent.Name())
		}
	}
	sort.Strings(out)
	return out
}

// sweepStale removes bperf- namespaces left by an earlier run that could
// not clean up (SIGKILL, power loss).
func sweepStale(logf func(string, ...any)) {
	for _, n := range listOurNetns() {
		logf("removing stale namespace %s from an earlier run", n)
		if err := deleteNetns(n); err != nil {
			logf("warning: %v", err)
		}
	}
}

// rootLinks returns the link names of the root network namespace; the run
// compares them before and after to prove it left nothing behind there.
func rootLinks() map[string]bool {
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

// linkMTU reads a link's MTU inside a namespace.
func linkMTU(ctx context.Context, ns, dev string) int {
	out, err := run(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
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
