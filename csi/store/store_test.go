package store

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseID(t *testing.T) {
	hex := strings.Repeat("ab", 16)
	for _, tc := range []struct {
		kind, id string
		ok       bool
	}{
		{KindVolume, "vol-" + hex + ".node-1", true},
		{KindVolume, "vol-" + hex + ".a.b.c", true},
		{KindSnapshot, "snap-" + hex + ".n", true},
		{KindSnapshot, "vol-" + hex + ".n", false}, // wrong kind
		{KindVolume, "vol-" + hex[:31] + ".n", false},
		{KindVolume, "vol-" + strings.ToUpper(hex) + ".n", false},
		{KindVolume, "vol-" + hex + ".", false},
		{KindVolume, "vol-" + hex + "./../x", false},
		{KindVolume, "vol-" + hex + ".n/..", false},
		{KindVolume, "../vol-" + hex + ".n", false},
		{KindVolume, "vol-" + hex + ".-n", false},
		{KindVolume, "vol-" + hex + "." + strings.Repeat("n", 100), false}, // over 128 bytes
		{KindVolume, "", false},
	} {
		_, err := ParseID(tc.kind, tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ParseID(%s, %q) error = %v, want ok=%v", tc.kind, tc.id, err, tc.ok)
		}
	}
}

func TestValidNameAndNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"pvc-1", true}, {"../../x", true}, {"", false}, {strings.Repeat("x", 129), false}, {"a\x00b", false}} {
		if err := ValidName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		node string
		ok   bool
	}{{"kind-worker", true}, {"n1.example.com", true}, {"Upper", false}, {"a/b", false}, {"", false}, {strings.Repeat("n", 91), false}} {
		if err := ValidNodeID(tc.node); (err == nil) != tc.ok {
			t.Errorf("ValidNodeID(%q) = %v, want ok=%v", tc.node, err, tc.ok)
		}
	}
}

// TestCreateIdempotent: the same name gives the same volume; a bigger size
// or another source is a conflict; the data directory stays under root.
func TestCreateIdempotent(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "root"), filepath.Join(dir, "state"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	v1, created, err := s.CreateVolume(Volume{Name: "../../etc", Capacity: 1 << 20}, nil)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	id, _ := ParseID(KindVolume, v1.ID)
	if got := s.DataDir(id); !strings.HasPrefix(got, filepath.Join(dir, "root", "volumes")+"/") {
		t.Errorf("data dir %s escapes the root", got)
	}
	v2, created, err := s.CreateVolume(Volume{Name: "../../etc", Capacity: 1 << 20}, nil)
	if err != nil || created || v2.ID != v1.ID {
		t.Fatalf("repeat: %v %v %v", v2, created, err)
	}
	if _, _, err := s.CreateVolume(Volume{Name: "../../etc", Capacity: 2 << 20}, nil); err != ErrExists {
		t.Errorf("bigger repeat: %v, want ErrExists", err)
	}
	if _, _, err := s.CreateVolume(Volume{Name: "../../etc", Capacity: 1 << 20, Source: "x"}, nil); err != ErrExists {
		t.Errorf("other source: %v, want ErrExists", err)
	}
	if err := s.DeleteVolume(id); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(id); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Volume(id); err != ErrNotFound {
		t.Errorf("after delete: %v", err)
	}
}

// TestCopyTree keeps holes, hard links, symlinks and modes.
func TestCopyTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.Truncate(64 << 20)
	f.WriteAt([]byte("x"), 32<<20)
	f.Close()
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o4755)
	syscall.Chmod(filepath.Join(src, "a"), 0o4755)
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "b"))
	os.Symlink("/nowhere", filepath.Join(src, "l"))
	if err := CopyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "sparse"), &st)
	if st.Size != 64<<20 || st.Blocks*512 > 1<<20 {
		t.Errorf("sparse copy: size %d, %d bytes allocated; want 64 MiB size, little allocated", st.Size, st.Blocks*512)
	}
	var a, b syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "a"), &a)
	syscall.Stat(filepath.Join(dst, "b"), &b)
	if a.Ino != b.Ino {
		t.Error("hard link became two files")
	}
	if a.Mode&0o7777 != 0o4755 {
		t.Errorf("mode %o, want 4755", a.Mode&0o7777)
	}
	if l, err := os.Readlink(filepath.Join(dst, "l")); err != nil || l != "/nowhere" {
		t.Errorf("symlink %q %v", l, err)
	}
}
