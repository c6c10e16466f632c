package logs

import (
	"os"
	"path/filepath"
	"sync"
)

// File is a container log file opened for appending. It is safe for
// concurrent use: the stdout and stderr copiers of one container share it,
// and every Write reaches the file whole, so a record written with one
// Write call is never interleaved with another.
//
// Reopen supports ReopenContainerLog: kubelet renames the file while
// rotating it and then asks the runtime to continue in a fresh file at the
// original path. Writes after Close are dropped without error, so a
// copier that outlives its container (it drains the pipe until the shim
// closes it) needs no special case.
type File struct {
	path string

	mu     sync.Mutex
	f      *os.File
	closed bool
}

// Open creates the parent directory if needed and opens path for
// appending (mode 0640, as kubelet's log readers expect root ownership).
func Open(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Write appends p. After Close it reports success and drops p.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return len(p), nil
	}
	return f.f.Write(p)
}

// Reopen opens the path again (creating it) and continues writing there.
// The new file is opened before the old one is closed, so a failure leaves
// the old file in use and no record is lost. Reopen after Close returns
// os.ErrClosed.
func (f *File) Reopen() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	nf, err := openAppend(f.path)
	if err != nil {
		return err
	}
	old := f.f
	f.f = nf
	return old.Close()
}

// Close closes the file. Further Writes are discarded; Close is idempotent.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return f.f.Close()
}
