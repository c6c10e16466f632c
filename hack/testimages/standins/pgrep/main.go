// Command pgrep is a minimal pgrep for the busybox test image: Debian's
// busybox-static 1.35 has no pgrep applet, and critest runs
// `sh -c "pgrep sleep || true"` expecting an empty stderr.
//
// Usage: pgrep [-f] [-x] [-l] PATTERN. PATTERN is an extended regular
// expression matched against the process name (/proc/PID/comm), or against
// the full command line with -f. Matching PIDs are printed one per line;
// the exit status is 1 when nothing matched, 2 on a usage error.
package main

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	var full, exact, long bool
	var pattern string
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-") && len(a) > 1 && pattern == "" {
			for _, c := range a[1:] {
				switch c {
				case 'f':
					full = true
				case 'x':
					exact = true
				case 'l':
					long = true
				default:
					usage()
				}
			}
			continue
		}
		if pattern != "" {
			usage()
		}
		pattern = a
	}
	if pattern == "" {
		usage()
	}
	if exact {
		pattern = "^(" + pattern + ")$"
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrep:", err)
		os.Exit(2)
	}

	ents, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrep:", err)
		os.Exit(2)
	}
	var pids []int
	names := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() { // like procps, never match itself
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue // exited meanwhile
		}
		name := strings.TrimSuffix(string(comm), "\n")
		subject := name
		if full {
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if s := strings.TrimRight(strings.ReplaceAll(string(cmdline), "\x00", " "), " "); s != "" {
				subject = s
			}
		}
		if re.MatchString(subject) {
			pids = append(pids, pid)
			names[pid] = name
		}
	}
	sort.Ints(pids)
	for _, pid := range pids {
		if long {
			fmt.Println(pid, names[pid])
		} else {
			fmt.Println(pid)
		}
	}
	if len(pids) == 0 {
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: pgrep [-flx] PATTERN")
	os.Exit(2)
}
