package fdstore

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPutListDelete hands the store one end of a pipe and checks that the
// descriptor it gives back is the same open file.
func TestPutListDelete(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fd.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	go s.Serve(l)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := NewClient(sock)
	defer c.Close()
	if err := c.Put("vol-a", map[string]string{"path": "/x"}, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	w.Close() // the store's copy keeps the pipe open

	for _, tc := range []struct {
		prefix string
		want   int
	}{{"", 1}, {"vol-", 1}, {"snap-", 0}} {
		got, err := c.List(tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Fatalf("List(%q) = %d entries, want %d", tc.prefix, len(got), tc.want)
		}
		for _, e := range got {
			if string(e.Meta) != `{"path":"/x"}` {
				t.Errorf("meta = %s", e.Meta)
			}
			if _, err := unix.Write(e.Fd, []byte("hi")); err != nil {
				t.Fatalf("write through the returned descriptor: %v", err)
			}
			unix.Close(e.Fd)
			buf := make([]byte, 2)
			if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "hi" {
				t.Fatalf("read %q %v: not the same pipe", buf, err)
			}
		}
	}
	keys, err := c.Keys()
	if err != nil || len(keys) != 1 || keys[0] != "vol-a" {
		t.Fatalf("Keys = %v %v", keys, err)
	}
	if err := c.Delete("vol-a"); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 {
		t.Fatalf("%d held after delete", s.Len())
	}
	// Every write end is closed now: the reader sees EOF.
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after delete = %d, %v; want EOF", n, err)
	}
	if err := c.Put("", nil, 0); err == nil {
		t.Error("put without a key was accepted")
	}
}
