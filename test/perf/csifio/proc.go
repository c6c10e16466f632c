package csifio

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthdev/berth/internal/mountinfo"
)

// IsPlugin reports whether a command line (NUL-split) is the berth-csi
// node plugin started from bin with endpoint: the fd store runs the same
// binary, and other tests may run other plugins of other builds, so both
// the binary and this plugin's --endpoint must match.
func IsPlugin(args []string, bin, endpoint string) bool {
	if len(args) == 0 || args[0] != bin {
		return false
	}
	for i, a := range args[1:] {
		if a == "--endpoint="+endpoint || a == "--endpoint" && i+2 < len(args) && args[i+2] == endpoint {
			return true
		}
	}
	return false
}

// FindPlugin scans /proc for the one berth-csi process of bin serving
// endpoint. Only processes whose executable is bin have their command line
// read: reading another process's cmdline takes its mm lock, and a process
// stuck on a dead FUSE mount (another test's) can hold that for minutes.
func FindPlugin(bin, endpoint string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	exe, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return 0, err
	}
	var found []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/exe"); err != nil || l != exe {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		if IsPlugin(strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00"), bin, endpoint) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("want one process %s --endpoint=%s, found %v", bin, endpoint, found)
	}
	return found[0], nil
}

// ReadHWM reads VmHWM (KiB) of a process.
func ReadHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry = mountinfo.Mount

// mountString is "source on point type fstype (options; superoptions)".
func mountString(m MountEntry) string {
	return fmt.Sprintf("%s on %s type %s (%s; %s)", m.Source, m.Point, m.FSType, m.Options, m.SuperOptions)
}

// ParseMountinfo reads /proc/PID/mountinfo text; octal escapes in paths
// (\040 for a space) are decoded.
func ParseMountinfo(text string) []MountEntry { return mountinfo.Parse(text) }

// MountOf returns the mount that holds path (the last mounted one with the
// longest matching mount point).
func MountOf(entries []MountEntry, path string) (MountEntry, bool) {
	var best MountEntry
	ok := false
	for _, e := range entries {
		if path == e.Point || e.Point == "/" || strings.HasPrefix(path, e.Point+"/") {
			if !ok || len(e.Point) >= len(best.Point) {
				best, ok = e, true
			}
		}
	}
	return best, ok
}

// Mounts reads this process's mount table.
func Mounts() []MountEntry {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	return ParseMountinfo(string(b))
}

// ParseVolumeCounter reads one volume's sample of a counter from
// Prometheus text exposition, e.g.
// berth_csi_volume_read_bytes_total{volume="ID"} 1.2e+06.
func ParseVolumeCounter(text, metric, volume string) (float64, bool) {
	prefix := metric + `{volume="` + volume + `"}`
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// ParseBlockStat reads the bytes read and written out of a block device's
// stat file (/sys/class/block/DEV/stat: sectors read is the 3rd field,
// sectors written the 7th, in 512-byte units whatever the device's own
// sector size).
func ParseBlockStat(text string) (read, written int64, ok bool) {
	f := strings.Fields(text)
	if len(f) < 7 {
		return 0, 0, false
	}
	r, err1 := strconv.ParseInt(f[2], 10, 64)
	w, err2 := strconv.ParseInt(f[6], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return r * 512, w * 512, true
}

// BlockStat reads a block device's bytes read and written so far; source
// is a mount source such as /dev/vda.
func BlockStat(source string) (read, written int64, ok bool) {
	if !strings.HasPrefix(source, "/dev/") {
		return 0, 0, false
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(source), "stat"))
	if err != nil {
		return 0, 0, false
	}
	return ParseBlockStat(string(b))
}
