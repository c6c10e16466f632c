package crilat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ParseStatus reads VmRSS, RssAnon and RssFile (KiB) out of the text of
// /proc/PID/status. VmRSS is required; the split is informational (and
// absent on old kernels).
func ParseStatus(status string) (MemReading, error) {
	var m MemReading
	found := false
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.VmRSSKiB, found = n, true
		case "RssAnon":
			m.RssAnonKiB = n
		case "RssFile":
			m.RssFileKiB = n
		}
	}
	if !found {
		return m, fmt.Errorf("no VmRSS line")
	}
	return m, nil
}

// ReadMem reads one process's memory.
func ReadMem(pid int) (MemReading, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return MemReading{}, err
	}
	m, err := ParseStatus(string(b))
	if err != nil {
		return m, fmt.Errorf("pid %d: %w", pid, err)
	}
	return m, nil
}

// MedianReading picks the reading with the median VmRSS (the lower middle
// one for an even count, so the result is a real reading, not a blend of
// two) and records every VmRSS in SamplesKiB.
func MedianReading(rs []MemReading) MemReading {
	if len(rs) == 0 {
		return MemReading{}
	}
	s := append([]MemReading(nil), rs...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].VmRSSKiB < s[j].VmRSSKiB })
	m := s[(len(s)-1)/2]
	m.SamplesKiB = nil
	for _, r := range rs {
		m.SamplesKiB = append(m.SamplesKiB, r.VmRSSKiB)
	}
	return m
}

// IsShimOf reports whether a command line (NUL-split) is a runc v2 shim
// serving the containerd at address: the shim re-executes itself with
// "-address <containerd's gRPC socket>", which is what tells the shims of
// two containerds on one machine apart.
func IsShimOf(args []string, address string) bool {
	if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-runc-v2") {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if (args[i] == "-address" || args[i] == "--address") && args[i+1] == address {
			return true
		}
	}
	return false
}

// ParsePss reads the Pss line (KiB) of /proc/PID/smaps_rollup.
func ParsePss(rollup string) (int64, bool) {
	for line := range strings.SplitSeq(rollup, "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// Shims finds every shim of the containerd at address in /proc and sums
// their VmRSS and their PSS. Shims double-fork away from containerd (their
// parent is a subreaper or init), so the command line, not the parent,
// finds them. The VmRSS sum counts the pages all shims share (the binary,
// libc) once per shim; the PSS sum splits them, so it is what the shims
// really cost together.
func Shims(address string) (count int, rssKiB, pssKiB int64) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
		if !IsShimOf(args, address) {
			continue
		}
		m, err := ReadMem(pid)
		if err != nil {
			continue // exited meanwhile
		}
		count++
		rssKiB += m.VmRSSKiB
		if b, err := os.ReadFile("/proc/" + e.Name() + "/smaps_rollup"); err == nil {
			if pss, ok := ParsePss(string(b)); ok {
				pssKiB += pss
			}
		}
	}
	return count, rssKiB, pssKiB
}
