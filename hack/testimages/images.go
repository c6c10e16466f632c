package main

import (
	"fmt"
	"io/fs"
	"runtime"
	"strings"
)

// spec is one image and every public name it is pushed under.
type spec struct {
	names  []string // references as critest spells them
	layers []string // keys understood by builder.layer, bottom first
	config containerConfig
}

// containerConfig is the "config" object of an OCI image config: the part
// the runtime applies to containers.
type containerConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// idLabel gives every image a distinct config, hence a distinct image ID.
// critest removes images by ID, so an image sharing busybox's ID would take
// busybox (or the sandbox image) with it in the middle of a run.
const idLabel = "org.berthdev.test-image"

const (
	e2e         = "registry.k8s.io/e2e-test-images/"
	crit        = "gcr.io/k8s-staging-cri-tools/"
	arch        = runtime.GOARCH
	portHTTP    = "80/tcp"
	portHostnet = "12003/tcp"
	layerNginx  = "nginx"
)

// SandboxImage is the pause image both runtimes pin as their sandbox image.
const SandboxImage = "registry.k8s.io/pause:3.10.2"

// specs lists every image critest v1.36.0's validation suite pulls
// (sigs.k8s.io/cri-tools pkg/validate/consts.go, security_context_linux.go,
// multi_container_linux.go, pkg/framework/util.go), plus the sandbox image.
// The benchmark suite (pkg/benchmark, public.ecr.aws busybox tags) is not
// covered, and neither is agnhost: the validation suite never uses it.
//
// Not built: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…
// ("public image with digest"). A digest names the exact bytes of upstream's
// multi-arch index, which cannot be reproduced without pulling it, so that
// one spec fails on every runtime here and is skipped with --ginkgo.skip.
func specs() []spec {
	busybox := containerConfig{Env: []string{defaultPath}, Cmd: []string{"sh"}}
	user := func(u string) containerConfig { c := busybox; c.User = u; return c }
	with := func(layers ...string) []string { return append([]string{"busybox"}, layers...) }
	pause := containerConfig{
		Env: []string{defaultPath}, Entrypoint: []string{"/pause"},
		User: "65535:65535", WorkingDir: "/", // as upstream's pause
	}
	return []spec{
		{names: []string{e2e + "busybox:1.29-2"}, layers: with(), config: busybox},
		{
			names: []string{e2e + "nginx:1.14-2"}, layers: with(layerNginx),
			config: containerConfig{
				Env: []string{defaultPath}, Cmd: []string{"nginx", "-g", "daemon off;"},
				ExposedPorts: map[string]struct{}{portHTTP: {}}, StopSignal: "SIGTERM",
			},
		},
		{
			// Upstream's tag is latest, and critest names it without a tag.
			names: []string{crit + "hostnet-nginx-" + arch + ":latest"}, layers: with(layerNginx, "hostnet-conf"),
			config: containerConfig{
				Env: []string{defaultPath}, Cmd: []string{"nginx", "-g", "daemon off;"},
				ExposedPorts: map[string]struct{}{portHostnet: {}}, StopSignal: "SIGQUIT",
			},
		},
		{
			names: []string{e2e + "httpd:2.4.39-4"}, layers: with("httpd"),
			config: containerConfig{
				Env:        []string{"PATH=/usr/local/apache2/bin:" + strings.TrimPrefix(defaultPath, "PATH=")},
				Cmd:        []string{"httpd-foreground"},
				WorkingDir: "/usr/local/apache2", ExposedPorts: map[string]struct{}{portHTTP: {}},
				StopSignal: "SIGWINCH",
			},
		},
		{
			names: []string{e2e + "nonewprivs:1.3"}, layers: with("nnp"),
			config: containerConfig{Env: []string{defaultPath}, Cmd: []string{"nnp"}},
		},
		{names: []string{crit + "test-image-latest:latest"}, layers: with("file:test-image-latest"), config: busybox},
		{names: []string{crit + "test-image-tag:test"}, layers: with("file:test"), config: busybox},
		{names: []string{crit + "test-image-tag:all"}, layers: with("file:all"), config: busybox},
		{names: []string{crit + "test-image-1:latest"}, layers: with("file:test-image-1"), config: busybox},
		{names: []string{crit + "test-image-2:latest"}, layers: with("file:test-image-2"), config: busybox},
		{names: []string{crit + "test-image-3:latest"}, layers: with("file:test-image-3"), config: busybox},
		{
			// One image under three tags: "exactly 3 repoTags", and removing
			// it by one tag removes all three.
			names:  []string{crit + "test-image-tags:1", crit + "test-image-tags:2", crit + "test-image-tags:3"},
			layers: with("file:test-image-tags"), config: busybox,
		},
		{names: []string{crit + "test-image-user-uid:latest"}, layers: with(), config: user("1002")},
		{names: []string{crit + "test-image-user-username:latest"}, layers: with(), config: user("www-data")},
		{names: []string{crit + "test-image-user-uid-group:latest"}, layers: with(), config: user("1003:1004")},
		{names: []string{crit + "test-image-user-username-group:latest"}, layers: with(), config: user("www-data:1004")},
		{names: []string{crit + "test-image-predefined-group:latest"}, layers: with("predefined-group"), config: user("1000")},
		{names: []string{SandboxImage}, layers: []string{"pause"}, config: pause},
		{
			// The same image from two registries ("same identifier from
			// different registries"); both map to repository "pause". Its ID
			// differs from the sandbox image's, because critest removes it by ID.
			names:  []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"},
			layers: []string{"pause"}, config: pause,
		},
	}
}

// repoTag splits a public reference into the mirror's repository (the path
// without the registry host, which is how containerd asks a mirror) and tag.
func repoTag(ref string) (repo, tag string, err error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || !strings.ContainsAny(host, ".:") {
		return "", "", fmt.Errorf("%q: no registry host", ref)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || strings.Contains(rest[i:], "/") {
		return rest, "latest", nil
	}
	return rest[:i], rest[i+1:], nil
}

// Account files of the busybox image, as in docker.io/library/busybox
// (which the upstream e2e and cri-tools images are built from): critest
// needs root, nobody (65534) and www-data (33).
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
	// What `adduser -u 1000 -D default-user && addgroup -g 50000
	// group-defined-in-image && addgroup default-user group-defined-in-image`
	// appends in cri-tools' images/image-predefined-group.
	predefinedPasswd = "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
	predefinedGroup  = "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"

	// glibc looks users and groups up through NSS; files only.
	nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"
)

// builder makes layers from Debian's busybox (with its libc) and the Go
// stand-ins, building each layer once however many images share it.
type builder struct {
	root    []rootFile        // bin/busybox and its shared objects (loadDebRoot)
	applets []string          // `busybox --list`
	bins    map[string][]byte // stand-in binaries by name (pgrep, nginx, pause, ...)
	cache   map[string]builtLayer
}

func (b *builder) layer(key string) (builtLayer, error) {
	if l, ok := b.cache[key]; ok {
		return l, nil
	}
	l := newLayer()
	switch key {
	case "busybox":
		for _, d := range []string{"bin", "dev", "etc", "home", "proc", "sys", "usr/bin", "usr/sbin",
			"usr/local/bin", "var/run", "var/spool/mail", "var/www"} {
			l.dir(d, 0o755)
		}
		l.dir("root", 0o700)
		l.dir("tmp", 0o777|fs.ModeSticky)
		l.file("etc/passwd", 0o644, []byte(passwd))
		l.file("etc/group", 0o644, []byte(group))
		l.file("etc/nsswitch.conf", 0o644, []byte(nsswitch))
		for _, f := range b.root {
			if f.link != "" {
				l.symlink(f.path, f.link)
			} else {
				l.file(f.path, f.mode, f.data)
			}
		}
		for _, a := range b.applets {
			if a != "busybox" && !strings.Contains(a, "/") {
				l.hardlink("bin/"+a, "bin/busybox")
			}
		}
		// Applets Debian's build lacks, which critest runs.
		l.file("bin/pgrep", 0o755, b.bins["pgrep"])
		l.file("bin/ipcs", 0o755, b.bins["ipcs"])
	case layerNginx:
		l.file("usr/sbin/nginx", 0o755, b.bins["nginx"])
		l.file("etc/nginx/conf.d/default.conf", 0o644, []byte(nginxConf(80)))
		l.file("usr/share/nginx/html/index.html", 0o644, []byte(nginxIndex))
		l.dir("var/log/nginx", 0o755)
	case "hostnet-conf":
		// As cri-tools' images/hostnet-nginx: only the listen port changes.
		l.dir("etc/nginx/conf.d", 0o755)
		l.file("etc/nginx/conf.d/default.conf", 0o644, []byte(nginxConf(12003)))
	case "httpd":
		l.file("usr/local/apache2/bin/httpd", 0o755, b.bins["httpd"])
		l.file("usr/local/bin/httpd-foreground", 0o755, []byte(httpdForeground))
		l.dir("usr/local/apache2/logs", 0o755)
	case "nnp":
		l.file("usr/local/bin/nnp", 0o755|fs.ModeSetuid, b.bins["nnp"])
	case "predefined-group":
		l.file("etc/passwd", 0o644, []byte(passwd+predefinedPasswd))
		l.file("etc/group", 0o644, []byte(group+predefinedGroup))
		l.dirOwned("home/default-user", 0o755, 1000, 1000) // adduser makes the user own it
	case "pause":
		l.file("pause", 0o755, b.bins["berth-pause"])
	default:
		name, ok := strings.CutPrefix(key, "file:")
		if !ok {
			return builtLayer{}, fmt.Errorf("unknown layer %q", key)
		}
		// cri-tools' images/image-test: ADD ${TEST} ${TEST}, a file named
		// after the image, so each image's content (and ID) differs.
		l.file(name, 0o644, []byte(name+"\n"))
	}
	bl, err := l.finish()
	if err != nil {
		return builtLayer{}, fmt.Errorf("layer %s: %w", key, err)
	}
	b.cache[key] = bl
	return bl, nil
}

func nginxConf(port int) string {
	return fmt.Sprintf(`server {
    listen       %d;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
`, port)
}

const nginxIndex = `<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1></body>
</html>
`

// httpdForeground is the httpd image's entry script. The full path keeps
// busybox's own httpd applet out of the way whatever PATH says.
const httpdForeground = `#!/bin/sh
set -e
rm -f /usr/local/apache2/logs/httpd.pid
exec /usr/local/apache2/bin/httpd -DFOREGROUND "$@"
`
