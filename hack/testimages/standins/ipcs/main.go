// Command ipcs is a minimal `ipcs -m` for the busybox test image: Debian's
// busybox-static 1.35 has no ipcs applet, and critest's HostIpc specs run
// `ipcs -m` in a container and look for the ID of a segment created on the
// host (present with host IPC, absent with pod IPC).
//
// It prints the shared memory segments of the caller's IPC namespace from
// /proc/sysvipc/shm in util-linux's layout. The headers hold no digits, so
// an empty table can never contain a segment ID by accident. Other
// facilities (-q, -s) are not implemented.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	for _, a := range os.Args[1:] {
		if a != "-m" && a != "-a" {
			fmt.Fprintf(os.Stderr, "ipcs: option %q not supported (only -m)\n", a)
			os.Exit(1)
		}
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipcs:", err)
		os.Exit(1)
	}
	defer f.Close()

	users := userNames()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "------ Shared Memory Segments --------")
	fmt.Fprintf(w, "%-10s %-10s %-10s %-10s %-10s %-10s %-12s\n",
		"key", "shmid", "owner", "perms", "bytes", "nattch", "status")

	sc := bufio.NewScanner(f)
	var col map[string]int
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if col == nil { // the first line names the columns
			col = map[string]int{}
			for i, name := range fields {
				col[name] = i
			}
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(fields) {
				return fields[i]
			}
			return ""
		}
		key, _ := strconv.ParseInt(get("key"), 10, 64)
		perms, _ := strconv.ParseUint(get("perms"), 8, 32) // printed in octal
		owner := get("uid")
		if n, ok := users[owner]; ok {
			owner = n
		}
		var status []string
		if perms&01000 != 0 { // SHM_DEST
			status = append(status, "dest")
		}
		if perms&02000 != 0 { // SHM_LOCKED
			status = append(status, "locked")
		}
		fmt.Fprintf(w, "0x%08x %-10s %-10s %-10o %-10s %-10s %-12s\n",
			uint32(key), get("shmid"), owner, perms&0777, get("size"), get("nattch"), strings.Join(status, " "))
	}
	fmt.Fprintln(w)
}

// userNames maps uid strings to names from the image's /etc/passwd.
func userNames() map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return m
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) > 2 {
			if _, ok := m[f[2]]; !ok {
				m[f[2]] = f[0]
			}
		}
	}
	return m
}
