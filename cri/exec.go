package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// maxExecSyncOutput caps each ExecSync stream, as kubelet's probes would
// otherwise let a chatty command grow berth-cri without bound.
const maxExecSyncOutput = 16 << 20

func (s *Service) newStreamServer() (streaming.Server, error) {
	cfg := streaming.DefaultConfig
	cfg.Addr = s.cfg.StreamAddress
	if s.cfg.StreamIdleTimeout > 0 {
		cfg.StreamIdleTimeout = time.Duration(s.cfg.StreamIdleTimeout)
	}
	return streaming.NewServer(cfg, streamRuntime{s})
}

// runningContainer returns a container that must be running for exec or
// attach.
func (s *Service) runningContainer(id string) (*container, error) {
	c, err := s.lookupContainer(id)
	if err != nil {
		return nil, err
	}
	if c.status().State != runtime.ContainerState_CONTAINER_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	}
	return c, nil
}

// ExecSync runs a command to completion and returns its output. The timeout
// is enforced: the process is killed when it expires.
func (s *Service) ExecSync(ctx context.Context, r *runtime.ExecSyncRequest) (*runtime.ExecSyncResponse, error) {
	if len(r.GetCmd()) == 0 {
		return nil, invalid("cmd is required")
	}
	c, err := s.runningContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	var stdout, stderr cappedBuffer
	stdout.max, stderr.max = maxExecSyncOutput, maxExecSyncOutput
	code, err := s.execProcess(s.nsCtx(ctx), c, r.GetCmd(), false, nil, &stdout, &stderr, nil,
		time.Duration(r.GetTimeout())*time.Second)
	if err != nil {
		return nil, err
	}
	return &runtime.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(code)}, nil
}

type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

// execProcess runs cmd in the container's namespaces with the container's
// process spec (user, env, caps, cwd).
func (s *Service) execProcess(ctx context.Context, c *container, cmd []string, tty bool, stdin io.Reader,
	stdout, stderr io.Writer, resize <-chan remotecommand.TerminalSize, timeout time.Duration) (uint32, error) {
	task, err := c.cntr.Task(ctx, nil)
	if err != nil {
		return 0, errorf(err, "load task of container %s", c.ID)
	}
	sp, err := c.cntr.Spec(ctx)
	if err != nil {
		return 0, errorf(err, "read spec of container %s", c.ID)
	}
	pspec := sp.Process
	pspec.Args = cmd
	pspec.Terminal = tty
	if tty {
		pspec.Env = append(pspec.Env, "TERM=xterm")
	}
	execID := newID()[:16]
	var stdinR io.Reader
	stdinEOF := make(chan struct{})
	if stdin != nil {
		stdinR = &eofNotifier{r: stdin, done: stdinEOF}
	}
	if stderr == nil || tty {
		stderr = io.Discard
	}
	opts := []cio.Opt{cio.WithStreams(stdinR, stdout, stderr), cio.WithFIFODir(filepath.Join(s.containerStateDir(c.ID), "exec"))}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	process, err := task.Exec(ctx, execID, pspec, cio.NewCreator(opts...))
	if err != nil {
		return 0, errorf(err, "exec in container %s", c.ID)
	}
	// A detached context: the process must be reaped even when the
	// caller's context ends.
	bg := context.WithoutCancel(ctx)
	defer func() {
		if _, err := process.Delete(bg, containerd.WithProcessKill); err != nil && !isNotFound(err) {
			s.log.Warn("delete exec process", "container", c.ID, "exec", execID, "err", err)
		}
	}()
	exitCh, err := process.Wait(bg)
	if err != nil {
		return 0, errorf(err, "wait exec in container %s", c.ID)
	}
	if err := process.Start(ctx); err != nil {
		return 0, errorf(err, "start exec in container %s", c.ID)
	}
	if stdin != nil {
		go func() {
			select {
			case <-stdinEOF:
				_ = process.CloseIO(bg, containerd.WithStdinCloser)
			case <-exitCh:
			}
		}()
	}
	if resize != nil {
		go func() {
			for sz := range resize {
				if sz.Width == 0 && sz.Height == 0 {
					continue
				}
				_ = process.Resize(bg, uint32(sz.Width), uint32(sz.Height))
			}
		}()
	}
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case es := <-exitCh:
		// Wait for the output to drain before reporting: the process may
		// exit before the last bytes are copied out of its FIFOs.
		if ioDone := waitIO(process.IO(), 2*time.Second); !ioDone {
			s.log.Debug("exec output did not drain", "container", c.ID)
		}
		code, _, err := es.Result()
		if err != nil {
			return 0, errorf(err, "exec in container %s", c.ID)
		}
		return code, nil
	case <-timer:
		_ = process.Kill(bg, syscall.SIGKILL)
		<-exitCh
		return 0, status.Errorf(codes.DeadlineExceeded, "command %q timed out after %s", cmd, timeout)
	case <-ctx.Done():
		_ = process.Kill(bg, syscall.SIGKILL)
		<-exitCh
		return 0, status.FromContextError(ctx.Err()).Err()
	}
}

func waitIO(pio cio.IO, d time.Duration) bool {
	if pio == nil {
		return true
	}
	done := make(chan struct{})
	go func() { pio.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		pio.Cancel()
		return false
	}
}

// eofNotifier closes done when the client's stdin ends, so the process's
// stdin can be closed too.
type eofNotifier struct {
	r    io.Reader
	done chan struct{}
	once sync.Once
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}

// Exec, Attach and PortForward return a URL on the streaming server.
func (s *Service) Exec(ctx context.Context, r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	if len(r.GetCmd()) == 0 {
		return nil, invalid("cmd is required")
	}
	if !r.GetStdin() && !r.GetStdout() && !r.GetStderr() {
		return nil, invalid("one of stdin, stdout or stderr must be set")
	}
	if r.GetTty() && r.GetStderr() {
		return nil, invalid("tty and stderr cannot both be set")
	}
	if _, err := s.runningContainer(r.GetContainerId()); err != nil {
		return nil, err
	}
	return s.stream.GetExec(r)
}

func (s *Service) Attach(ctx context.Context, r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	if !r.GetStdin() && !r.GetStdout() && !r.GetStderr() {
		return nil, invalid("one of stdin, stdout or stderr must be set")
	}
	if _, err := s.runningContainer(r.GetContainerId()); err != nil {
		return nil, err
	}
	return s.stream.GetAttach(r)
}

func (s *Service) PortForward(ctx context.Context, r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	sb, err := s.lookupSandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.snapshot().State != runtime.PodSandboxState_SANDBOX_READY {
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s is not ready", sb.ID)
	}
	return s.stream.GetPortForward(r)
}

// streamRuntime is the streaming server's view of the service.
type streamRuntime struct{ s *Service }

func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.s.runningContainer(id)
	if err != nil {
		return err
	}
	var stdout, stderr io.Writer = io.Discard, io.Discard
	if out != nil {
		stdout = out
	}
	if errw != nil {
		stderr = errw
	}
	code, err := r.s.execProcess(r.s.nsCtx(ctx), c, cmd, tty, in, stdout, stderr, resize, 0)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError(code)
	}
	return nil
}

func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, err := r.s.runningContainer(id)
	if err != nil {
		return err
	}
	if resize != nil {
		nctx := r.s.nsCtx(context.WithoutCancel(ctx))
		go func() {
			task, err := c.cntr.Task(nctx, nil)
			if err != nil {
				return
			}
			for sz := range resize {
				if sz.Width == 0 && sz.Height == 0 {
					continue
				}
				_ = task.Resize(nctx, uint32(sz.Width), uint32(sz.Height))
			}
		}()
	}
	c.io.attach(ctx, in, out, errw)
	return nil
}

// PortForward dials the port on localhost inside the pod's network
// namespace, from berth-cri itself (no socat or nsenter), and copies both
// ways until either side closes.
func (r streamRuntime) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	sb, ok := r.s.sandboxes.get(sandboxID)
	if !ok {
		return fmt.Errorf("pod sandbox %s not found", sandboxID)
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d is out of range", port)
	}
	dial := func() (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		conn, err := d.DialContext(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			conn, err = d.DialContext(ctx, "tcp6", fmt.Sprintf("[::1]:%d", port))
		}
		return conn, err
	}
	var conn net.Conn
	var err error
	if p := sb.snapshot().NetNSPath; p != "" {
		err = ns.WithNetNSPath(p, func(ns.NetNS) error {
			var derr error
			conn, derr = dial()
			return derr
		})
	} else {
		conn, err = dial()
	}
	if err != nil {
		return fmt.Errorf("dial port %d in pod sandbox %s: %w", port, sandboxID, err)
	}
	defer conn.Close()
	errCh := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		errCh <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errCh <- err
	}()
	select {
	case err = <-errCh:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("port forward %d: %w", port, err)
	}
	return nil
}

// exitError carries a non-zero exit code to the streaming server, which
// reports it to the client (kubectl exec's exit status).
type exitError uint32

func (e exitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", uint32(e))
}
func (e exitError) String() string  { return e.Error() }
func (e exitError) Exited() bool    { return true }
func (e exitError) ExitStatus() int { return int(e) }
