// Package mountinfo reads /proc/self/mountinfo: which filesystems are
// mounted where. berth-csi uses it to tell a live FUSE mount from a path
// that merely exists, and the test harnesses to clean up.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Major, Minor int    // the st_dev of the mount; for FUSE, Minor is the connection
	Root         string // the directory of the filesystem mounted here (a cgroup mount's cgroup)
	Point        string // mount point, unescaped
	FSType       string // e.g. "fuse.berth-csi", "ext4"
	Source       string
	Options      string // per-mount options (rw,nosuid,...)
	SuperOptions string // filesystem options
}

// Read parses the calling process's mount table, in mount order (a mount
// stacked on another comes after it).
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := parse(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// Parse reads mountinfo text (of any process).
func Parse(text string) []Mount {
	var out []Mount
	for _, line := range strings.Split(text, "\n") {
		if m, ok := parse(line); ok {
			out = append(out, m)
		}
	}
	return out
}

// parse reads "id parent major:minor root point opts [optional...] - type source superopts".
func parse(line string) (Mount, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return Mount{}, false
	}
	var m Mount
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, false
	}
	m.Major, _ = strconv.Atoi(maj)
	m.Minor, _ = strconv.Atoi(min)
	m.Root = Unescape(f[3])
	m.Point = Unescape(f[4])
	m.Options = f[5]
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			if i+1 < len(f) {
				m.FSType = f[i+1]
			}
			if i+2 < len(f) {
				m.Source = Unescape(f[i+2])
			}
			if i+3 < len(f) {
				m.SuperOptions = f[i+3]
			}
			return m, true
		}
	}
	return Mount{}, false
}

// TypeAt returns the type of the topmost filesystem mounted exactly at
// path, or "" when nothing is.
func TypeAt(path string) string {
	ms, _ := Read()
	typ := ""
	for _, m := range ms {
		if m.Point == path {
			typ = m.FSType
		}
	}
	return typ
}

// Under lists the mounts at or below dir, deepest and latest first, which
// is the order to unmount them in.
func Under(dir string) []Mount {
	ms, _ := Read()
	var out []Mount
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == dir || strings.HasPrefix(ms[i].Point, dir+"/") {
			out = append(out, ms[i])
		}
	}
	return out
}

// Unescape undoes mountinfo's octal escapes (\040 for a space, \011 for a
// tab, \012 for a newline, \134 for a backslash).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
