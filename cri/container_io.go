package cri

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/berthdev/berth/cri/logs"
)

// containerIO connects a container's stdio FIFOs to its CRI log file and to
// any attached clients. The shim keeps its own read end of each output FIFO
// open, so when berth-cri dies the container blocks instead of getting
// EPIPE, and a restarted berth-cri reopens the same FIFOs and continues the
// log where it stopped.
type containerIO struct {
	fifos   *cio.FIFOSet
	stdinOn bool
	once    bool // StdinOnce: close stdin after the first attach ends
	tty     bool
	logPath string
	maxLine int

	mu       sync.Mutex
	dio      *cio.DirectIO
	log      *logs.File
	attached map[*attachment]struct{}
	stdinCl  bool
	// closeTask closes the task's stdin inside the shim, which keeps its
	// own handle on the FIFO; closing ours alone never reaches the process.
	closeTask func()
	done      chan struct{} // closed when both output streams hit EOF
}

type attachment struct {
	stdout, stderr io.Writer
}

// newContainerIO creates the FIFO set for a new container.
func newContainerIO(dir, id string, tty, stdin, stdinOnce bool, logPath string, maxLine int) (*containerIO, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fifos, err := cio.NewFIFOSetInDir(dir, id, tty)
	if err != nil {
		return nil, err
	}
	if !stdin {
		fifos.Stdin = ""
	}
	return &containerIO{fifos: fifos, stdinOn: stdin, once: stdinOnce, tty: tty, logPath: logPath,
		maxLine: maxLine, attached: map[*attachment]struct{}{}, done: make(chan struct{})}, nil
}

// attachIO rebuilds a containerIO for a running container after a restart,
// from the FIFO paths the task reports.
func attachIO(fifos *cio.FIFOSet, stdinOnce bool, logPath string, maxLine int) *containerIO {
	return &containerIO{fifos: fifos, stdinOn: fifos.Stdin != "", once: stdinOnce, tty: fifos.Terminal,
		logPath: logPath, maxLine: maxLine, attached: map[*attachment]struct{}{}, done: make(chan struct{})}
}

// creator is the cio.Creator for NewTask.
func (c *containerIO) creator(ctx context.Context) cio.Creator {
	return func(string) (cio.IO, error) { return c.open(ctx) }
}

// attacher is the cio.Attach used when loading a running task.
func (c *containerIO) attacher(ctx context.Context) cio.Attach {
	return func(*cio.FIFOSet) (cio.IO, error) { return c.open(ctx) }
}

func (c *containerIO) open(ctx context.Context) (cio.IO, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dio != nil {
		return c.dio, nil
	}
	dio, err := cio.NewDirectIO(context.WithoutCancel(ctx), c.fifos)
	if err != nil {
		return nil, err
	}
	c.dio = dio
	if c.logPath != "" {
		if err := os.MkdirAll(filepath.Dir(c.logPath), 0o755); err == nil {
			c.log, _ = logs.Open(c.logPath)
		}
	}
	var wg sync.WaitGroup
	copyOut := func(r io.Reader, stream string) {
		defer wg.Done()
		pr, pw := io.Pipe()
		logDone := make(chan struct{})
		go func() {
			defer close(logDone)
			var w io.Writer = io.Discard
			if c.log != nil {
				w = c.log
			}
			_ = logs.Redirect(pr, w, stream, c.maxLine, time.Now)
			_, _ = io.Copy(io.Discard, pr)
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				_, _ = pw.Write(buf[:n])
				c.fanOut(stream, buf[:n])
			}
			if err != nil {
				break
			}
		}
		pw.Close()
		<-logDone
	}
	if dio.Stdout != nil {
		wg.Add(1)
		go copyOut(dio.Stdout, "stdout")
	}
	if dio.Stderr != nil {
		wg.Add(1)
		go copyOut(dio.Stderr, "stderr")
	}
	go func() {
		wg.Wait()
		close(c.done)
	}()
	return dio, nil
}

func (c *containerIO) fanOut(stream string, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a := range c.attached {
		w := a.stdout
		if stream == "stderr" {
			w = a.stderr
		}
		if w != nil {
			_, _ = w.Write(p)
		}
	}
}

// attach streams the container's output to the client and the client's
// input to the container until the container exits or the client leaves.
func (c *containerIO) attach(ctx context.Context, stdin io.Reader, stdout, stderr io.WriteCloser) {
	a := &attachment{}
	if stdout != nil {
		a.stdout = stdout
	}
	if stderr != nil {
		a.stderr = stderr
	}
	if c.tty {
		a.stderr = nil
	}
	c.mu.Lock()
	c.attached[a] = struct{}{}
	dio := c.dio
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.attached, a)
		c.mu.Unlock()
	}()

	// With stdin, the end of the client's input ends the attach, as
	// kubectl expects: with StdinOnce the container's stdin is closed and
	// output keeps flowing until the container exits; otherwise the client
	// is simply detached and the container keeps its stdin.
	stdinDone := make(chan struct{})
	withStdin := stdin != nil && c.stdinOn && dio != nil && dio.Stdin != nil
	if withStdin {
		go func() {
			defer close(stdinDone)
			_, _ = io.Copy(dio.Stdin, stdin)
		}()
	}
	select {
	case <-c.done:
		return
	case <-ctx.Done():
		return
	case <-stdinDone:
	}
	if c.once && !c.tty {
		c.closeStdin()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
	}
}

// setTaskCloser registers how to close the task's stdin in the shim.
func (c *containerIO) setTaskCloser(f func()) {
	c.mu.Lock()
	c.closeTask = f
	c.mu.Unlock()
}

func (c *containerIO) closeStdin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dio != nil && c.dio.Stdin != nil && !c.stdinCl {
		c.dio.Stdin.Close()
		c.stdinCl = true
		if c.closeTask != nil {
			go c.closeTask()
		}
	}
}

// waitDrained waits until the output streams reached EOF, bounded so a
// process that left a grandchild holding the pipe cannot block exit
// handling forever.
func (c *containerIO) waitDrained(d time.Duration) {
	c.mu.Lock()
	opened := c.dio != nil
	c.mu.Unlock()
	if !opened {
		return
	}
	select {
	case <-c.done:
	case <-time.After(d):
	}
}

// reopenLog closes and reopens the log file (ReopenContainerLog).
func (c *containerIO) reopenLog() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log == nil {
		if c.logPath == "" {
			return nil
		}
		f, err := logs.Open(c.logPath)
		if err != nil {
			return err
		}
		c.log = f
		return nil
	}
	return c.log.Reopen()
}

// close releases the FIFOs (removing their directory) and the log file.
func (c *containerIO) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dio != nil {
		c.dio.Cancel()
		_ = c.dio.Close()
	} else if c.fifos != nil {
		_ = c.fifos.Close()
	}
	if c.log != nil {
		_ = c.log.Close()
	}
}
