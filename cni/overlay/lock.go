package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLockDir holds the per-VNI lock files. /run is a tmpfs, so a lock
// never outlives a reboot, and it is shared by every process on the host
// (the CNI plugin runs in the host mount namespace, like berth-netd).
const DefaultLockDir = "/run/berth"

// lockTimeout bounds how long a caller waits for another writer. A reconcile
// takes milliseconds; waiting longer than this means the holder is stuck, and
// failing (the CNI ADD will be retried by the kubelet) beats hanging forever.
var lockTimeout = 30 * time.Second

// lockPollInterval is how often a waiting caller retries a contended lock.
const lockPollInterval = 5 * time.Millisecond

// fileLock is an exclusive flock(2) on a file. flock locks belong to the open
// file description, so two goroutines of one process that each open the file
// exclude each other exactly like two processes do.
type fileLock struct{ f *os.File }

func acquireLock(path string) (*fileLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create lock dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	// Poll with LOCK_NB rather than block in LOCK_EX so that the wait is
	// bounded; a blocking flock cannot be cancelled short of a signal.
	deadline := time.Now().Add(lockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: still held by another process after %s", path, lockTimeout)
		}
		time.Sleep(lockPollInterval)
	}
}

// release drops the lock. Closing the descriptor releases it too, which is
// also what the kernel does if the process dies while holding it.
func (l *fileLock) release() {
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	_ = l.f.Close()
}
