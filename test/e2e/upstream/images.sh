#!/usr/bin/env bash
# images.sh build | load CLUSTER... | list
#
# The e2e test images the upstream suite (e2e.test) runs, built offline under
# the exact names and tags e2e.test v1.36.3 asks for
# (k8s.io/kubernetes/test/utils/image/manifest.go), so that its pods find
# them preloaded in every kind node and nothing is pulled:
#
#   registry.k8s.io/e2e-test-images/agnhost:2.63.0   agnhost built from its
#       Go package (test/e2e/upstream/agnhost, the same Kubernetes version as
#       e2e.test) on a Debian bookworm rootfs with the tools the upstream
#       Alpine image installs: dig, curl, nc, ip/ss, iperf, bash, ipcs;
#       coredns at /coredns, porter's certificate, /uploads, agnhost-2, the
#       user 1000/group 50000 the SupplementalGroups test expects
#   registry.k8s.io/e2e-test-images/agnhost:2.55     the same image (e2e
#       uses it as "the previous agnhost" only to change a pod's image)
#   registry.k8s.io/e2e-test-images/glibc-dns-testing:2.0.0   the same
#       bookworm rootfs (glibc, dig, nslookup) as upstream's Debian image
#   registry.k8s.io/e2e-test-images/nginx:1.15-4, nginx:1.27-0   Debian's
#       nginx-light on that rootfs, in the foreground, serving port 80
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-1   Debian's
#       busybox-static with every applet linked
#   registry.k8s.io/e2e-test-images/nonroot:1.5   that busybox, USER 1234
#   registry.k8s.io/e2e-test-images/nonewprivs:1.4   that busybox plus a
#       setuid-root nnp that prints its effective uid (built from
#       test/images/nonewprivs)
#
# The versions inside differ from upstream's (Debian's busybox 1.35, nginx
# 1.22); every image carries a dev.berth.note label saying so. Images that
# cannot be made here are listed in test/e2e/upstream/README.md with the
# tests that need them (they are skipped by e2e-upstream.sh).
#
# Output: docker-archive tarballs in _output/e2e-upstream/images. A rebuild
# happens only when an input (rootfs recipe, binary, Dockerfile) changes.
# `load` puts every tarball into every node of the named kind clusters,
# skipping images a node already has. Needs root (debootstrap) the first
# time, and Docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=../../../hack/versions.sh
. "$repo/hack/versions.sh"
export PATH=$repo/hack/kind/docker-shim:$KIND_BIN:$PATH
log() { printf '[e2e-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

out=$REPO_ROOT/_output/e2e-upstream
imgdir=$out/images
bindir=$out/bin
mkdir -p "$imgdir" "$bindir"
reg=registry.k8s.io/e2e-test-images
AGNHOST_VERSION=2.63.0
base_tag=berth.dev/e2e-base:bookworm
mirror=${KIND_BASE_MIRROR:-http://deb.debian.org/debian}
# dnsutils for dig/nslookup (DNS tests), curl and netcat for the network
# checks, iproute2 for ip/ss, iperf, bash, procps, iputils-ping; util-linux
# (ipcs) is already in minbase; nginx-light for the nginx images.
base_pkgs=bash,curl,netcat-openbsd,iproute2,iperf,bind9-dnsutils,procps,iputils-ping,nginx-light
base_recipe="debootstrap --variant=minbase --include=$base_pkgs bookworm; users 1000/50000; nginx foreground; rev 1"

# ---- the bookworm rootfs shared by agnhost, glibc-dns-testing and nginx ----
build_base() {
	local rootfs=$out/e2e-base/rootfs.tar dir t0=$SECONDS sum have
	mkdir -p "$out/e2e-base/debs"
	if [ -f "$rootfs" ] && [ "$(cat "$rootfs.recipe" 2>/dev/null)" = "$base_recipe" ]; then
		log "e2e base rootfs: cached"
	else
		[ "$(id -u)" -eq 0 ] || die "the e2e base rootfs needs root (debootstrap)"
		command -v debootstrap >/dev/null ||
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
		dir=$out/e2e-base/rootfs.$$
		rm -rf "$dir"
		log "debootstrap --variant=minbase --include=$base_pkgs bookworm"
		# debootstrap swaps in a fake start-stop-daemon while it installs,
		# so nginx's postinst starts nothing on the host.
		nice -n 10 debootstrap --variant=minbase --include="$base_pkgs" --cache-dir="$out/e2e-base/debs" \
			bookworm "$dir" "$mirror" >"$out/e2e-base/debootstrap.log" 2>&1 ||
			{ tail -20 "$out/e2e-base/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
		# The user and group agnhost's image defines for the
		# SupplementalGroups-from-image test.
		echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$dir/etc/passwd"
		echo 'user-defined-in-image:x:1000:' >>"$dir/etc/group"
		echo 'group-defined-in-image:x:50000:user-defined-in-image' >>"$dir/etc/group"
		mkdir -p "$dir/home/user-defined-in-image"
		chown 1000:1000 "$dir/home/user-defined-in-image"
		# nginx as the upstream image runs it: logs to the container's
		# stdout/stderr, pid file where a non-root-owned /run is not needed.
		ln -sf /dev/stdout "$dir/var/log/nginx/access.log"
		ln -sf /dev/stderr "$dir/var/log/nginx/error.log"
		rm -rf "$dir"/usr/share/{doc,man,info,locale}/* "$dir"/var/cache/apt/* \
			"$dir"/var/lib/apt/lists/* "$dir"/var/cache/debconf/*-old
		tar --numeric-owner --sort=name --xattrs -C "$dir" \
			--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$rootfs.tmp" .
		rm -rf "$dir"
		mv "$rootfs.tmp" "$rootfs"
		echo "$base_recipe" >"$rootfs.recipe"
		log "e2e base rootfs: built in $((SECONDS - t0))s ($(du -m "$rootfs" | cut -f1) MB)"
	fi
	sum=$(sha256sum "$rootfs" | cut -d' ' -f1)
	have=$(docker image inspect -f '{{index .Config.Labels "dev.berth.rootfs-sha256"}}' "$base_tag" 2>/dev/null || true)
	if [ "$have" != "$sum" ]; then
		docker import --change "LABEL dev.berth.rootfs-sha256=$sum" \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			"$rootfs" "$base_tag" >/dev/null
		log "$base_tag: docker import"
	fi
}

# ---- Go binaries: agnhost and nnp, from the agnhost wrapper module ----
build_go() {
	local name=$1 pkg=$2 ldflags=$3 stamp
	stamp="k8s.io/kubernetes@$KIND_K8S_VERSION $pkg $ldflags"
	if [ -x "$bindir/$name" ] && [ "$(cat "$bindir/.$name.version" 2>/dev/null)" = "$stamp" ]; then
		return 0
	fi
	log "go build $name ($pkg)"
	(cd "$here/agnhost" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
		go build -trimpath -ldflags "-s -w $ldflags" -o "$bindir/$name.tmp" "$pkg")
	mv "$bindir/$name.tmp" "$bindir/$name"
	echo "$stamp" >"$bindir/.$name.version"
}

# image TAG... : build the context in $ctx (Dockerfile included) into the
# first TAG, add the other tags, save all of them into one tarball. Rebuilt
# only when the context changes.
image() {
	local first=$1 tar key
	tar=$imgdir/$(printf '%s' "${first#"$reg"/}" | tr '/:' '__').tar
	printf 'Dockerfile\n.dockerignore\n' >"$ctx/.dockerignore"
	key=$( (cd "$ctx" && find . -print0 | sort -z | xargs -0 -r stat -c '%n %a %F %N' && find . -type f -print0 | sort -z | xargs -0 -r cat) | sha256sum | cut -c1-64)
	key="$key $*"
	if [ -f "$tar" ] && [ "$(cat "$tar.key" 2>/dev/null)" = "$key" ]; then
		log "$first: cached"
		return 0
	fi
	docker build -q -t "$first" "$ctx" >/dev/null
	for t in "${@:2}"; do docker tag "$first" "$t"; done
	docker save -o "$tar.tmp" "$@"
	mv "$tar.tmp" "$tar"
	echo "$key" >"$tar.key"
	log "built $* ($(du -m "$tar" | cut -f1) MB)"
}

build() {
	command -v docker >/dev/null || die "docker is needed"
	local src
	src=$(cd "$here/agnhost" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
	[ -d "$src/test/images/agnhost" ] || die "no agnhost source in $src"
	build_base
	build_go agnhost k8s.io/kubernetes/test/images/agnhost "-X main.Version=$AGNHOST_VERSION"
	build_go nnp k8s.io/kubernetes/test/images/nonewprivs ""
	"$bindir/agnhost" --help >/dev/null || die "agnhost does not run"

	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT

	# agnhost
	cp "$bindir/agnhost" "$ctx/agnhost"
	ln -s agnhost "$ctx/agnhost-2"
	cp "$src/test/images/agnhost/porter/localhost.crt" "$src/test/images/agnhost/porter/localhost.key" "$ctx/"
	chmod 0644 "$ctx"/localhost.*
	if [ -x "$KIND_BIN/coredns" ]; then cp "$KIND_BIN/coredns" "$ctx/coredns"; else log "no $KIND_BIN/coredns: agnhost's /coredns left out"; fi
	mkdir -p "$ctx/uploads"
	cat >"$ctx/Dockerfile" <<EOF
FROM $base_tag
LABEL dev.berth.note="agnhost $AGNHOST_VERSION built from k8s.io/kubernetes@$KIND_K8S_VERSION test/images/agnhost on Debian bookworm (upstream: Alpine); also tagged 2.55; no fakeregistryserver data in /var/registry"
COPY . /
EXPOSE 80 8080 8081 9376 5000
ENTRYPOINT ["/agnhost"]
CMD ["pause"]
EOF
	image "$reg/agnhost:$AGNHOST_VERSION" "$reg/agnhost:2.55"
	rm -rf "${ctx:?}" && mkdir "$ctx"

	# glibc-dns-testing
	[ -x "$KIND_BIN/coredns" ] && cp "$KIND_BIN/coredns" "$ctx/coredns"
	cat >"$ctx/Dockerfile" <<EOF
FROM $base_tag
LABEL dev.berth.note="Debian bookworm with dnsutils, as upstream's glibc-dns-testing; coredns $COREDNS_VERSION at /coredns"
COPY . /
EOF
	image "$reg/glibc-dns-testing:2.0.0"
	rm -rf "${ctx:?}" && mkdir "$ctx"

	# nginx
	cat >"$ctx/Dockerfile" <<EOF
FROM $base_tag
LABEL dev.berth.note="Debian bookworm nginx-light (1.22), tagged as upstream's nginx test images"
EXPOSE 80
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx", "-g", "daemon off;"]
EOF
	image "$reg/nginx:1.15-4" "$reg/nginx:1.27-0"
	rm -rf "${ctx:?}" && mkdir "$ctx"

	# busybox, nonroot, nonewprivs
	if [ ! -x /bin/busybox ] || ! /bin/busybox --list | grep -qx nc; then
		log "apt-get install busybox-static"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null
	fi
	mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
	chmod 1777 "$ctx/rootfs/tmp"
	cp /bin/busybox "$ctx/rootfs/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf busybox "$ctx/rootfs/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ctx/rootfs/etc/passwd"
	printf 'root:x:0:\nnobody:x:65534:\n' >"$ctx/rootfs/etc/group"
	printf '%s\n' 'FROM scratch' 'LABEL dev.berth.note="Debian busybox-static (1.35) tagged as 1.37.0-1"' \
		'COPY rootfs/ /' 'ENV PATH=/bin' 'CMD ["sh"]' >"$ctx/Dockerfile"
	image "$reg/busybox:1.37.0-1"
	printf '%s\n' 'FROM scratch' 'LABEL dev.berth.note="Debian busybox-static (1.35), USER 1234, as upstream nonroot"' \
		'COPY rootfs/ /' 'ENV PATH=/bin' 'USER 1234' 'CMD ["sh"]' >"$ctx/Dockerfile"
	image "$reg/nonroot:1.5"
	# nonewprivs needs nnp setuid root, and docker build drops the setuid
	# bit here (Docker's fuse-overlayfs storage), so this one is packed by
	# imgpack (hack/kind/k8s/imgpack), which writes the mode into the layer.
	nonewprivs
	log "images in ${imgdir#"$REPO_ROOT"/}: $(cd "$imgdir" && ls ./*.tar | tr '\n' ' ')"
}

nonewprivs() {
	local tar=$imgdir/nonewprivs_1.4.tar tag=$reg/nonewprivs:1.4 key
	(cd "$repo/hack/kind/k8s/imgpack" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
		go build -trimpath -o "$bindir/imgpack" .)
	tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$ctx/rootfs" -cf "$ctx/busybox-rootfs.tar" .
	key=$(cat "$ctx/busybox-rootfs.tar" "$bindir/nnp" "$bindir/imgpack" | sha256sum | cut -c1-64)
	if [ -f "$tar" ] && [ "$(cat "$tar.key" 2>/dev/null)" = "$key" ]; then
		log "$tag: cached"
		return 0
	fi
	"$bindir/imgpack" -o "$tar" -tag "$tag" -base "$ctx/busybox-rootfs.tar" \
		-file "/usr/local/bin/nnp=$bindir/nnp:4755" -env PATH=/bin:/usr/local/bin -cmd nnp \
		-label "dev.berth.note=Debian busybox-static plus setuid-root nnp from test/images/nonewprivs" >/dev/null
	echo "$key" >"$tar.key"
	log "built $tag ($(du -m "$tar" | cut -f1) MB)"
}

# every tag in a docker-archive tarball
tags_of() { tar -xOf "$1" manifest.json | tr '"' '\n' | grep -E '^[a-z0-9.-]+(/[a-zA-Z0-9._-]+)+:[^ ]+$' || true; }

load() {
	local cluster node tar t missing
	[ $# -gt 0 ] || die "load: name at least one kind cluster"
	for cluster in "$@"; do
		for tar in "$imgdir"/*.tar; do
			[ -f "$tar" ] || die "no images in $imgdir: run '$0 build'"
			missing=0
			for node in $(kind get nodes --name "$cluster"); do
				for t in $(tags_of "$tar"); do
					docker exec "$node" ctr -n k8s.io images ls -q "name==$t" 2>/dev/null | grep -qx "$t" || missing=1
				done
			done
			if [ "$missing" = 0 ]; then continue; fi
			log "kind load $(basename "$tar") into $cluster"
			kind load image-archive "$tar" --name "$cluster" >/dev/null
		done
	done
}

case ${1:-} in
build) build ;;
load) shift; load "$@" ;;
list) for tar in "$imgdir"/*.tar; do tags_of "$tar"; done ;;
*) sed -n '2p' "$0" >&2; exit 2 ;;
esac
