// Command imgpack packs static binaries (and optionally a root filesystem
// tar) into a container image and writes it as a docker-archive tarball,
// which `docker load`, `kind load image-archive` and
// `ctr -n k8s.io images import` all accept. It needs no Docker Engine and no
// registry: hack/kind/control-plane-images.sh uses it to build the images
// kubeadm's control plane runs.
//
// The output is reproducible: every file in the added layer has uid/gid 0
// and the -created time as its mtime, and the config carries the same time,
// so the same inputs give the same image ID.
//
//	imgpack -o out.tar -tag registry.k8s.io/kube-apiserver:v1.36.3 \
//	    -etc -file /usr/local/bin/kube-apiserver=_output/kind/bin/kube-apiserver \
//	    -entrypoint /usr/local/bin/kube-apiserver
//
// It prints the image ID (the config digest) on stdout.
package main

import (
	"archive/tar"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// file is one -file flag: DEST=SRC[:MODE], MODE in octal.
type file struct {
	dest, src string
	mode      fs.FileMode
}

func parseFile(v string) (file, error) {
	dest, src, ok := strings.Cut(v, "=")
	if !ok || !path.IsAbs(dest) || src == "" {
		return file{}, fmt.Errorf("-file %q: want /DEST=SRC[:MODE]", v)
	}
	f := file{dest: path.Clean(dest), src: src}
	if i := strings.LastIndex(src, ":"); i > 0 {
		m, err := strconv.ParseUint(src[i+1:], 8, 32)
		if err != nil {
			return file{}, fmt.Errorf("-file %q: mode: %v", v, err)
		}
		f.src, f.mode = src[:i], fs.FileMode(m)
	}
	return f, nil
}

// Minimal /etc for images built from nothing, as distroless has: Go's user
// and resolver lookups read these, and /tmp must exist for os.TempDir.
var etcFiles = []struct {
	name string
	mode fs.FileMode
	data string
}{
	{"etc/group", 0o644, "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
	{"etc/nsswitch.conf", 0o644, "hosts: files dns\n"},
	{"etc/passwd", 0o644, "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
}

func main() {
	var (
		out, base, user, workdir, created string
		tags, files, envs, labels, ports  list
		entrypoint, cmd                   string
		etc                               bool
	)
	flag.StringVar(&out, "o", "", "output docker-archive tarball (required)")
	flag.Var(&tags, "tag", "image reference to tag the image with (repeatable, at least one)")
	flag.StringVar(&base, "base", "", "uncompressed root filesystem tar to use as the first layer")
	flag.BoolVar(&etc, "etc", false, "add /etc/passwd, /etc/group, /etc/nsswitch.conf and /tmp")
	flag.Var(&files, "file", "/DEST=SRC[:MODE]: copy SRC into the image (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "entrypoint, space-separated")
	flag.StringVar(&cmd, "cmd", "", "default arguments, space-separated")
	flag.StringVar(&user, "user", "", "user[:group] the container runs as")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.Var(&envs, "env", "KEY=VALUE environment variable (repeatable)")
	flag.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	flag.Var(&ports, "expose", "PORT/PROTO to declare (repeatable)")
	flag.StringVar(&created, "created", "", "creation time and file mtime, RFC 3339 (default: $SOURCE_DATE_EPOCH, else 1970-01-01)")
	flag.Parse()
	if out == "" || len(tags) == 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(out, base, etc, tags, files, envs, labels, ports, entrypoint, cmd, user, workdir, created); err != nil {
		fmt.Fprintln(os.Stderr, "imgpack:", err)
		os.Exit(1)
	}
}

func run(out, base string, etc bool, tags, files, envs, labels, ports list, entrypoint, cmd, user, workdir, created string) error {
	when := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %v", err)
		}
		when = time.Unix(n, 0).UTC()
	}
	if created != "" {
		t, err := time.Parse(time.RFC3339, created)
		if err != nil {
			return fmt.Errorf("-created: %v", err)
		}
		when = t.UTC()
	}
	var fl []file
	for _, v := range files {
		f, err := parseFile(v)
		if err != nil {
			return err
		}
		fl = append(fl, f)
	}

	img := empty.Image
	hist := v1.History{Created: v1.Time{Time: when}}
	if base != "" {
		l, err := tarball.LayerFromFile(base, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
		if err != nil {
			return fmt.Errorf("base layer: %v", err)
		}
		h := hist
		h.CreatedBy = "imgpack -base " + filepath.Base(base)
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: h}); err != nil {
			return err
		}
	}
	if etc || len(fl) > 0 {
		tmp, err := os.CreateTemp(filepath.Dir(out), ".imgpack-layer-*.tar")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		// Parent directories are only written into an image built from
		// nothing: over a base they would replace what the base has there.
		if err := writeLayer(tmp, etc, fl, base == "", when); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		l, err := tarball.LayerFromFile(tmp.Name(), tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
		if err != nil {
			return err
		}
		h := hist
		var dests []string
		for _, f := range fl {
			dests = append(dests, f.dest)
		}
		h.CreatedBy = "imgpack " + strings.Join(dests, " ")
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: h}); err != nil {
			return err
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: when}
	cf.Config.Entrypoint = strings.Fields(entrypoint)
	cf.Config.Cmd = strings.Fields(cmd)
	cf.Config.User = user
	cf.Config.WorkingDir = workdir
	cf.Config.Env = envs
	if len(labels) > 0 {
		cf.Config.Labels = map[string]string{}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			cf.Config.Labels[k] = v
		}
	}
	if len(ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}

	refs := map[name.Reference]v1.Image{}
	for _, t := range tags {
		ref, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("-tag %q: %v", t, err)
		}
		refs[ref] = img
	}
	tmpOut := out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmpOut, refs); err != nil {
		os.Remove(tmpOut)
		return err
	}
	if err := os.Rename(tmpOut, out); err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

// writeLayer writes one uncompressed layer tar to w: the minimal /etc when
// etc is set, then every file, in path order.
func writeLayer(w io.Writer, etc bool, files []file, parents bool, when time.Time) error {
	tw := tar.NewWriter(w)
	seen := map[string]bool{}
	hdr := func(name string, typ byte, mode fs.FileMode, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: int64(mode), Size: size,
			ModTime: when, AccessTime: when, ChangeTime: when, Format: tar.FormatPAX}
	}
	dir := func(name string, mode fs.FileMode) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		return tw.WriteHeader(hdr(name+"/", tar.TypeDir, mode, 0))
	}
	mkParents := func(p string) error {
		if !parents {
			return nil
		}
		var dirs []string
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dirs = append(dirs, d)
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := dir(dirs[i], 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	if etc {
		if err := dir("etc", 0o755); err != nil {
			return err
		}
		for _, f := range etcFiles {
			if err := tw.WriteHeader(hdr(f.name, tar.TypeReg, f.mode, int64(len(f.data)))); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, f.data); err != nil {
				return err
			}
		}
		if err := dir("tmp", 0o1777); err != nil {
			return err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].dest < files[j].dest })
	for _, f := range files {
		rel := strings.TrimPrefix(f.dest, "/")
		if err := mkParents(rel); err != nil {
			return err
		}
		src, err := os.Open(f.src)
		if err != nil {
			return err
		}
		st, err := src.Stat()
		if err != nil || !st.Mode().IsRegular() {
			src.Close()
			return fmt.Errorf("%s: not a regular file (%v)", f.src, err)
		}
		mode := f.mode
		if mode == 0 {
			mode = st.Mode().Perm()
		}
		if err := tw.WriteHeader(hdr(rel, tar.TypeReg, mode, st.Size())); err != nil {
			src.Close()
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
