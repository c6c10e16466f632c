package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// rootFile is a file taken from the Debian packages into the base layer:
// a regular file (data) or a symlink (link).
type rootFile struct {
	path string // relative to the image root, e.g. "lib/x86_64-linux-gnu/libc.so.6"
	mode fs.FileMode
	data []byte
	link string
}

// loadDebRoot reads busybox and the shared objects it needs from dir, the
// dpkg -x tree of Debian's busybox and libc6 packages.
//
// Debian's dynamically linked busybox is used, not busybox-static: the
// static build enables FEATURE_SH_STANDALONE, so its sh runs applets
// in-process instead of executing them from PATH. That breaks two critest
// expectations: MaskedPaths masks /bin/ls and expects `sh -c ls` to fail
// with "/bin/sh: ls: Permission denied", and the httpd image's start script
// would run busybox's httpd applet instead of /usr/local/apache2/bin/httpd.
// The docker.io busybox:glibc image ships glibc the same way.
func loadDebRoot(dir string) (files []rootFile, applets []string, err error) {
	bin := filepath.Join(dir, "bin", "busybox")
	bb, err := os.ReadFile(bin)
	if err != nil {
		return nil, nil, err
	}
	files = append(files, rootFile{path: "bin/busybox", mode: 0o755, data: bb})

	// The applet list comes from the binary itself, so the links always
	// match what this build provides.
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	applets = strings.Fields(string(out))
	slices.Sort(applets)

	libs, err := sharedObjects(dir, "bin/busybox")
	if err != nil {
		return nil, nil, err
	}
	return append(files, libs...), applets, nil
}

// sharedObjects returns, in a stable order, the ELF interpreter and every
// library rel needs (transitively), resolved inside dir the way the dynamic
// loader will find them in the image: by the interpreter's absolute path
// and in the multiarch and plain library directories. Symlinks on the way
// (lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...) are kept.
func sharedObjects(dir, rel string) ([]rootFile, error) {
	searchDirs, _ := filepath.Glob(filepath.Join(dir, "lib", "*-linux-gnu*"))
	more, _ := filepath.Glob(filepath.Join(dir, "usr", "lib", "*-linux-gnu*"))
	searchDirs = append(searchDirs, more...)
	searchDirs = append(searchDirs, filepath.Join(dir, "lib64"), filepath.Join(dir, "lib"), filepath.Join(dir, "usr", "lib"))

	seen := map[string]bool{}
	var files []rootFile
	// add puts p (relative to dir) and, for a symlink, its target in files.
	var add func(p string) error
	add = func(p string) error {
		for !seen[p] {
			seen[p] = true
			full := filepath.Join(dir, p)
			st, err := os.Lstat(full)
			if err != nil {
				return err
			}
			if st.Mode()&fs.ModeSymlink == 0 {
				data, err := os.ReadFile(full)
				if err != nil {
					return err
				}
				files = append(files, rootFile{path: p, mode: st.Mode().Perm(), data: data})
				return nil
			}
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			files = append(files, rootFile{path: p, mode: 0o777, link: target})
			if path.IsAbs(target) {
				p = strings.TrimPrefix(target, "/")
			} else {
				p = path.Join(path.Dir(p), target)
			}
		}
		return nil
	}
	find := func(lib string) (string, error) {
		for _, d := range searchDirs {
			if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
				r, err := filepath.Rel(dir, filepath.Join(d, lib))
				return filepath.ToSlash(r), err
			}
		}
		return "", fmt.Errorf("shared object %s not found under %s (is libc6 extracted there?)", lib, dir)
	}

	queue := []string{rel}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		f, err := elf.Open(filepath.Join(dir, cur))
		if err != nil {
			return nil, err
		}
		needed, err := f.ImportedLibraries()
		interp := ""
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(b, 0); err == nil {
					interp = strings.TrimRight(string(b), "\x00")
				}
			}
		}
		f.Close()
		if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
			return nil, fmt.Errorf("%s: %w", cur, err)
		}
		if interp != "" && !seen[strings.TrimPrefix(interp, "/")] {
			if err := add(strings.TrimPrefix(interp, "/")); err != nil {
				return nil, fmt.Errorf("interpreter of %s: %w", cur, err)
			}
		}
		for _, lib := range needed {
			p, err := find(lib)
			if err != nil {
				return nil, err
			}
			if !seen[p] {
				if err := add(p); err != nil {
					return nil, err
				}
				queue = append(queue, p)
			}
		}
	}
	return files, nil
}
