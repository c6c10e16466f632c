package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"path"
	"time"
)

// epoch is the mtime of every entry. Fixed times (with fixed owners, modes
// and entry order) make a layer's bytes, and so every digest, a function of
// its content alone: a rebuild pushes nothing new.
var epoch = time.Unix(0, 0).UTC()

// layer is an uncompressed tar being assembled in memory. Test layers are a
// few MB, so there is no need to stream.
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool // directories already written, for implicit parents
	err  error
}

func newLayer() *layer {
	l := &layer{dirs: map[string]bool{}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

// header writes one entry owned by uid/gid 0 unless owner says otherwise.
// Names are relative ("bin/sh"), as docker build writes them.
func (l *layer) header(h *tar.Header, data []byte) {
	if l.err != nil {
		return
	}
	h.ModTime = epoch
	h.Format = tar.FormatUSTAR // no PAX records carrying atime/ctime
	if l.err = l.tw.WriteHeader(h); l.err == nil && len(data) > 0 {
		_, l.err = l.tw.Write(data)
	}
}

// parents writes the missing parent directories of p (mode 0755, root).
// The applier would create them anyway, but with whatever mode it likes.
func (l *layer) parents(p string) {
	dir := path.Dir(p)
	if dir == "." || l.dirs[dir] {
		return
	}
	l.dir(dir, 0o755)
}

// dir adds a directory owned by root.
func (l *layer) dir(p string, mode fs.FileMode) { l.dirOwned(p, mode, 0, 0) }

// dirOwned adds a directory with an explicit owner (a user's home).
func (l *layer) dirOwned(p string, mode fs.FileMode, uid, gid int) {
	l.parents(p)
	l.dirs[p] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: tarMode(mode), Uid: uid, Gid: gid}, nil)
}

// file adds a regular file; mode may carry fs.ModeSetuid.
func (l *layer) file(p string, mode fs.FileMode, data []byte) {
	l.parents(p)
	l.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: tarMode(mode), Size: int64(len(data))}, data)
}

// hardlink adds p as a hard link to target, which must already be in the
// layer. busybox applets must be hard links: a symlink /bin/ls ->
// /bin/busybox would make a masked /bin/ls (a /dev/null bind mount on the
// resolved path) mask busybox, and with it every applet.
func (l *layer) hardlink(p, target string) {
	l.parents(p)
	l.header(&tar.Header{Typeflag: tar.TypeLink, Name: p, Linkname: target, Mode: 0o755}, nil)
}

// symlink adds p pointing to target (used for the dynamic loader's
// lib64/ path, as Debian ships it).
func (l *layer) symlink(p, target string) {
	l.parents(p)
	l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}, nil)
}

// tarMode converts an fs.FileMode to the tar mode bits (setuid is 04000).
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// blob is content ready to push: its bytes and sha256 digest.
type blob struct {
	data   []byte
	digest string
}

func newBlob(data []byte) blob {
	return blob{data: data, digest: fmt.Sprintf("sha256:%x", sha256.Sum256(data))}
}

// builtLayer is a finished layer: the gzip blob that is pushed and the
// digest of the uncompressed tar (the diff ID listed in the image config).
type builtLayer struct {
	gz     blob
	diffID string
}

// finish closes the tar and compresses it. gzip output is deterministic for
// a given Go release; the header carries no name and a zero mtime.
func (l *layer) finish() (builtLayer, error) {
	if l.err == nil {
		l.err = l.tw.Close()
	}
	if l.err != nil {
		return builtLayer{}, l.err
	}
	raw := l.buf.Bytes()
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return builtLayer{}, err
	}
	if _, err := zw.Write(raw); err != nil {
		return builtLayer{}, err
	}
	if err := zw.Close(); err != nil {
		return builtLayer{}, err
	}
	return builtLayer{gz: newBlob(gz.Bytes()), diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(raw))}, nil
}
