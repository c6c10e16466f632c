package logs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFileOpenCreatesDirAndAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pod", "ctr", "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path() != path {
		t.Fatalf("Path() = %q", f.Path())
	}
	if _, err := f.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, want 0640", st.Mode().Perm())
	}
	// A second Open appends instead of truncating (restart of berth-cri).
	f, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := readFile(t, path); got != "a\nb\n" {
		t.Fatalf("content = %q", got)
	}
}

func TestFileWriteAfterCloseIsDiscarded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	n, err := f.Write([]byte("lost\n"))
	if err != nil || n != 5 {
		t.Fatalf("Write after Close = %d, %v; want 5, nil", n, err)
	}
	if got := readFile(t, path); got != "" {
		t.Fatalf("content = %q, want empty", got)
	}
	if err := f.Reopen(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Reopen after Close = %v, want os.ErrClosed", err)
	}
}

func TestFileReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write([]byte("before\n"))
	// logrotate / kubelet: rename, then ReopenContainerLog.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("still old\n"))
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("after\n"))
	if got := readFile(t, rotated); got != "before\nstill old\n" {
		t.Fatalf("rotated = %q", got)
	}
	if got := readFile(t, path); got != "after\n" {
		t.Fatalf("new = %q", got)
	}
}

func TestFileReopenFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	// A directory in the way makes the open fail, even for root.
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err == nil {
		t.Fatal("Reopen succeeded with a directory at the path")
	}
	if _, err := f.Write([]byte("kept\n")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, rotated); got != "kept\n" {
		t.Fatalf("old file = %q", got)
	}
}

func TestFileConcurrentRecordsDoNotInterleave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const perStream = 500
	var wg sync.WaitGroup
	for _, stream := range []string{Stdout, Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var in strings.Builder
			for i := 0; i < perStream; i++ {
				fmt.Fprintf(&in, "%s-%04d-%s\n", stream, i, strings.Repeat("z", i%300))
			}
			if err := Redirect(strings.NewReader(in.String()), f, stream, 128, fixedNow); err != nil {
				t.Error(err)
			}
		}()
	}
	// Rotate while writing: no record may be torn or lost.
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	f.Close()

	lines, err := ReadLines(bytes.NewReader([]byte(readFile(t, path))))
	if err != nil {
		t.Fatal(err)
	}
	// Reassemble per stream; each stream's lines must come out in order.
	var cur = map[string][]byte{}
	var count = map[string]int{}
	for _, l := range lines {
		cur[l.Stream] = append(cur[l.Stream], l.Content...)
		if l.Partial {
			continue
		}
		want := fmt.Sprintf("%s-%04d-%s", l.Stream, count[l.Stream], strings.Repeat("z", count[l.Stream]%300))
		if string(cur[l.Stream]) != want {
			t.Fatalf("%s line %d = %q, want %q", l.Stream, count[l.Stream], cur[l.Stream], want)
		}
		cur[l.Stream] = nil
		count[l.Stream]++
	}
	if count[Stdout] != perStream || count[Stderr] != perStream {
		t.Fatalf("counts = %v", count)
	}
}
