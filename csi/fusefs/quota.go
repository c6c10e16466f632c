// Package fusefs serves one berth-csi volume as a FUSE filesystem: a
// loopback onto the volume's backing directory that enforces the volume's
// capacity, and that can be taken over by a new process after a restart
// because its node IDs are the backing inode numbers.
package fusefs

import (
	"sync"
	"syscall"
)

// blockSize is the unit quota reservations are rounded to. ext4, xfs and
// tmpfs all allocate in 4 KiB blocks for the files a pod writes.
const blockSize = 4096

// Quota is the per-volume limit on bytes and inodes. Usage is what the
// volume's files occupy: for each inode the larger of its apparent size and
// its allocated blocks, so that neither a sparse truncate nor a fallocate
// can escape the limit.
type Quota struct {
	mu        sync.Mutex
	capacity  int64
	maxInodes int64
	used      int64
	inodes    int64
}

// NewQuota returns a quota with the given limits and starting usage, as a
// walk of the backing directory measured it.
func NewQuota(capacity, maxInodes, used, inodes int64) *Quota {
	return &Quota{capacity: capacity, maxInodes: maxInodes, used: used, inodes: inodes}
}

// Usage reports bytes used, the byte limit, inodes used and the inode limit.
func (q *Quota) Usage() (used, capacity, inodes, maxInodes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used, q.capacity, q.inodes, q.maxInodes
}

// SetCapacity raises (or lowers) the byte limit; expansion is online because
// every check reads the limit under the same lock.
func (q *Quota) SetCapacity(capacity, maxInodes int64) {
	q.mu.Lock()
	q.capacity, q.maxInodes = capacity, maxInodes
	q.mu.Unlock()
}

// reserve takes up to want bytes. With partial set it grants what is left
// (rounded down to a block), as a filesystem that fills up mid-write does;
// otherwise it is all or nothing. It returns the bytes granted.
func (q *Quota) reserve(want int64, partial bool) (int64, syscall.Errno) {
	if want <= 0 {
		return 0, 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	free := q.capacity - q.used
	if want <= free {
		q.used += want
		return want, 0
	}
	if !partial {
		return 0, syscall.ENOSPC
	}
	free = free / blockSize * blockSize
	if free <= 0 {
		return 0, syscall.ENOSPC
	}
	q.used += free
	return free, 0
}

// adjust books a measured change in usage (positive or negative), and
// returns a reservation that turned out too large.
func (q *Quota) adjust(delta int64) {
	if delta == 0 {
		return
	}
	q.mu.Lock()
	q.used += delta
	if q.used < 0 {
		q.used = 0
	}
	q.mu.Unlock()
}

// takeInode claims one inode of the limit for a create.
func (q *Quota) takeInode() syscall.Errno {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.maxInodes > 0 && q.inodes >= q.maxInodes {
		return syscall.ENOSPC
	}
	q.inodes++
	return 0
}

func (q *Quota) releaseInode() {
	q.mu.Lock()
	if q.inodes > 0 {
		q.inodes--
	}
	q.mu.Unlock()
}

// usageOf is what one inode counts against the quota.
func usageOf(st *syscall.Stat_t) int64 {
	alloc := st.Blocks * 512
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return alloc
	}
	return max(alloc, roundUp(st.Size))
}

func roundUp(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + blockSize - 1) / blockSize * blockSize
}
