package fusefs

import (
	"syscall"
	"testing"
)

func TestQuotaReserve(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cap, used int64
		want      int64
		partial   bool
		granted   int64
		errno     syscall.Errno
	}{
		{"fits", 1 << 20, 0, 4096, false, 4096, 0},
		{"exact", 8192, 4096, 4096, false, 4096, 0},
		{"all or nothing", 8192, 4096, 8192, false, 0, syscall.ENOSPC},
		{"partial gets what is left", 16384, 4096, 65536, true, 12288, 0},
		{"partial rounds down to blocks", 10000, 0, 65536, true, 8192, 0},
		{"partial with nothing left", 4096, 4096, 4096, true, 0, syscall.ENOSPC},
		{"zero", 0, 0, 0, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewQuota(tc.cap, 0, tc.used, 0)
			got, errno := q.reserve(tc.want, tc.partial)
			if got != tc.granted || errno != tc.errno {
				t.Fatalf("reserve(%d, %v) = %d, %v; want %d, %v", tc.want, tc.partial, got, errno, tc.granted, tc.errno)
			}
			if used, _, _, _ := q.Usage(); used != tc.used+got {
				t.Errorf("used = %d, want %d", used, tc.used+got)
			}
		})
	}
}

func TestQuotaInodesAndExpand(t *testing.T) {
	q := NewQuota(4096, 2, 0, 1)
	if q.takeInode() != 0 || q.takeInode() != syscall.ENOSPC {
		t.Fatal("inode limit of 2 not enforced")
	}
	q.releaseInode()
	if q.takeInode() != 0 {
		t.Fatal("released inode not reusable")
	}
	if _, errno := q.reserve(8192, false); errno != syscall.ENOSPC {
		t.Fatal("8 KiB fit into 4 KiB")
	}
	q.SetCapacity(16384, 10)
	if _, errno := q.reserve(8192, false); errno != 0 {
		t.Fatal("expansion did not raise the limit")
	}
	q.adjust(-1 << 30)
	if used, _, _, _ := q.Usage(); used != 0 {
		t.Errorf("usage went below zero: %d", used)
	}
}

func TestUsageOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   syscall.Stat_t
		want int64
	}{
		{"sparse file counts its size", syscall.Stat_t{Mode: syscall.S_IFREG, Size: 1 << 20, Blocks: 8}, 1 << 20},
		{"fallocated beyond size counts blocks", syscall.Stat_t{Mode: syscall.S_IFREG, Size: 10, Blocks: 2048}, 1 << 20},
		{"partial block rounds up", syscall.Stat_t{Mode: syscall.S_IFREG, Size: 1}, 4096},
		{"directory counts blocks", syscall.Stat_t{Mode: syscall.S_IFDIR, Size: 4096, Blocks: 8}, 4096},
		{"symlink with no blocks", syscall.Stat_t{Mode: syscall.S_IFLNK, Size: 30}, 0},
	} {
		if got := usageOf(&tc.st); got != tc.want {
			t.Errorf("%s: usageOf = %d, want %d", tc.name, got, tc.want)
		}
	}
}
