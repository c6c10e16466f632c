#!/usr/bin/env bash
# build-k8s.sh [k8s|etcd|coredns|kind|e2e|all]...
#
# Builds every Kubernetes binary a kind node and its control plane need,
# offline (the Go module proxy is the only source), into $KIND_BIN
# (_output/kind/bin):
#
#   k8s      kubelet kubeadm kubectl kube-apiserver kube-controller-manager
#            kube-scheduler kube-proxy, at $KIND_K8S_VERSION, from the wrapper
#            module hack/kind/k8s (k8s.io/kubernetes cannot be `go install`ed:
#            its go.mod replaces the staging repos with ./staging paths). The
#            version is stamped with -X, as upstream's hack/lib/version.sh
#            does; without it the binaries say v0.0.0 and kubeadm refuses.
#   etcd     etcd and etcdctl at $ETCD_VERSION, from hack/kind/k8s/etcd.
#   coredns  coredns at $COREDNS_VERSION (go install, else copy-and-build).
#   kind     the kind CLI at $KIND_VERSION (go install).
#   e2e      e2e.test (go test -c k8s.io/kubernetes/test/e2e) and the ginkgo
#            CLI at the version kubernetes' go.mod requires, both from
#            hack/kind/k8s (tools_e2e.go keeps their packages in go.sum).
#   all      all of the above.
#
# With no argument: k8s etcd coredns kind (e2e is slow and not needed to
# start a cluster). Every binary has a stamp, $KIND_BIN/.<name>.version,
# holding the module version it was built from; a binary whose stamp matches
# the pin is skipped, so a second run only checks stamps. GOMODCACHE and
# GOCACHE are Go's defaults and shared with every other build on the machine.
# Build times are printed at the end and appended to $KIND_BIN/.build-times.
# Builds run under `nice -n 10`; the machine is shared.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"
log() { printf '[build-k8s] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

targets=()
for a in "$@"; do
	case $a in
	k8s | etcd | coredns | kind | e2e) targets+=("$a") ;;
	all) targets+=(k8s etcd coredns kind e2e) ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done
[ ${#targets[@]} -gt 0 ] || targets=(k8s etcd coredns kind)
want() { [[ " ${targets[*]} " == *" $1 "* ]]; }

k8s_mod=$here/k8s
etcd_mod=$here/k8s/etcd
command -v go >/dev/null || die "go is not installed"
mkdir -p "$KIND_BIN"
exec 9>"$KIND_BIN/.lock"
flock -n 9 || die "another build-k8s.sh is running (lock $KIND_BIN/.lock)"

# The wrapper modules' require lines are the real pins; the variables in
# hack/versions.sh must agree with them.
modver() { # modver DIR MODULE: the version DIR's go.mod selects for MODULE
	(cd "$1" && GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' "$2")
}
have=$(modver "$k8s_mod" k8s.io/kubernetes)
[ "$have" = "$KIND_K8S_VERSION" ] ||
	die "KIND_K8S_VERSION=$KIND_K8S_VERSION but hack/kind/k8s/go.mod requires k8s.io/kubernetes $have"
have=$(modver "$etcd_mod" go.etcd.io/etcd/server/v3)
[ "$have" = "$ETCD_VERSION" ] ||
	die "ETCD_VERSION=$ETCD_VERSION but hack/kind/k8s/etcd/go.mod requires go.etcd.io/etcd/server/v3 $have"

summary=()
timing() { # timing NAME SECONDS SPEC
	summary+=("$(printf '%-24s built in %4ss (%s)' "$1" "$2" "$3")")
	printf '%s %s %ss %s\n' "$(date -u +%FT%TZ)" "$1" "$2" "$3" >>"$KIND_BIN/.build-times"
}
fresh() { # fresh NAME SPEC: NAME exists and was built from SPEC
	if [ -x "$KIND_BIN/$1" ] && [ "$(cat "$KIND_BIN/.$1.version" 2>/dev/null)" = "$2" ]; then
		summary+=("$(printf '%-24s cached (%s)' "$1" "$2")")
		return 0
	fi
	return 1
}
stamp() { echo "$2" >"$KIND_BIN/.$1.version"; }
# check NAME WANT CMD...: CMD's output must contain WANT, else the binary
# and its stamp are removed.
check() {
	local name=$1 want=$2 out
	shift 2
	out=$("$@" 2>&1) || true
	if [[ $out != *"$want"* ]]; then
		rm -f "$KIND_BIN/$name" "$KIND_BIN/.$name.version"
		die "$name: '$*' printed '$out', want '$want'"
	fi
}

# Kubernetes. The version variables are upstream's (hack/lib/version.sh);
# buildDate is the release tag's time from the module proxy, so two builds of
# the same version are byte-identical.
k8s_ldflags() {
	local v=$KIND_K8S_VERSION major minor date x=""
	major=${v#v}; major=${major%%.*}
	minor=${v#v"$major".}; minor=${minor%%.*}
	date=$(cd "$k8s_mod" && go list -m -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p')
	[ -n "$date" ] || date=$(date -u +%FT%TZ)
	for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
	done
	printf '%s' "-s -w$x"
}

build_k8s() {
	local spec=k8s.io/kubernetes@$KIND_K8S_VERSION ldflags name t0
	ldflags=$(k8s_ldflags)
	# kubelet first: it compiles most of what the others share.
	for name in kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
		fresh "$name" "$spec" && continue
		log "go build $name ($spec)"
		t0=$SECONDS
		(cd "$k8s_mod" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
			go build -trimpath -ldflags "$ldflags" -o "$KIND_BIN/$name.tmp" "k8s.io/kubernetes/cmd/$name")
		mv "$KIND_BIN/$name.tmp" "$KIND_BIN/$name"
		stamp "$name" "$spec"
		timing "$name" $((SECONDS - t0)) "$spec"
	done
	check kubeadm "$KIND_K8S_VERSION" "$KIND_BIN/kubeadm" version -o short
	check kubectl "Client Version: $KIND_K8S_VERSION" "$KIND_BIN/kubectl" version --client
	for name in kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
		check "$name" "Kubernetes $KIND_K8S_VERSION" "$KIND_BIN/$name" --version
	done
}

build_etcd() {
	local spec="go.etcd.io/etcd@$ETCD_VERSION" name pkg t0
	for name in etcd etcdctl; do
		fresh "$name" "$spec" && continue
		case $name in
		etcd) pkg=go.etcd.io/etcd/server/v3 ;;
		etcdctl) pkg=go.etcd.io/etcd/etcdctl/v3 ;;
		esac
		log "go build $name ($pkg@$ETCD_VERSION)"
		t0=$SECONDS
		(cd "$etcd_mod" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
			go build -trimpath -ldflags "-s -w" -o "$KIND_BIN/$name.tmp" "$pkg")
		mv "$KIND_BIN/$name.tmp" "$KIND_BIN/$name"
		stamp "$name" "$spec"
		timing "$name" $((SECONDS - t0)) "$spec"
	done
	check etcd "etcd Version: ${ETCD_VERSION#v}" "$KIND_BIN/etcd" --version
	check etcdctl "etcdctl version: ${ETCD_VERSION#v}" "$KIND_BIN/etcdctl" version
}

# goinstall NAME SPEC: go install one module version into $KIND_BIN. Run from
# / so that no go.mod is consulted.
goinstall() {
	local name=$1 spec=$2 t0=$SECONDS
	fresh "$name" "$spec" && return 0
	log "go install $spec"
	(cd / && CGO_ENABLED=0 GOBIN="$KIND_BIN" GOFLAGS=-buildvcs=false nice -n 10 \
		go install -trimpath -ldflags "-s -w" "$spec") || return 1
	stamp "$name" "$spec"
	timing "$name" $((SECONDS - t0)) "$spec"
}

# copybuild NAME SPEC PKG: build PKG (relative to the module root) from a
# copy of the module's source, for modules `go install` refuses.
copybuild() {
	local name=$1 spec=$2 pkg=$3 dir work t0=$SECONDS
	dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "$spec" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $spec: no source directory"
	work=$(mktemp -d)
	cp -r "$dir/." "$work/"
	chmod -R u+w "$work"
	log "go build $name from a copy of $spec"
	(cd "$work" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
		go build -trimpath -ldflags "-s -w" -o "$KIND_BIN/$name" "$pkg") || { rm -rf "$work"; return 1; }
	rm -rf "$work"
	stamp "$name" "$spec"
	timing "$name" $((SECONDS - t0)) "$spec (copied source)"
}

build_coredns() {
	local spec=github.com/coredns/coredns@$COREDNS_VERSION
	goinstall coredns "$spec" || copybuild coredns "$spec" . || die "coredns: both go install and a copied build failed"
	check coredns "CoreDNS-${COREDNS_VERSION#v}" "$KIND_BIN/coredns" -version
}

build_kind() {
	goinstall kind "sigs.k8s.io/kind@$KIND_VERSION" || die "go install sigs.k8s.io/kind@$KIND_VERSION failed"
	check kind "kind $KIND_VERSION " "$KIND_BIN/kind" version
}

# e2e.test is the upstream conformance/e2e suite (a test binary of
# k8s.io/kubernetes/test/e2e); ginkgo is the CLI that runs it in parallel,
# at the version kubernetes' go.mod requires.
build_e2e() {
	local spec=k8s.io/kubernetes@$KIND_K8S_VERSION gv t0
	if ! fresh e2e.test "$spec"; then
		log "go test -c k8s.io/kubernetes/test/e2e ($spec)"
		t0=$SECONDS
		(cd "$k8s_mod" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
			go test -c -trimpath -ldflags "$(k8s_ldflags)" -o "$KIND_BIN/e2e.test.tmp" k8s.io/kubernetes/test/e2e)
		mv "$KIND_BIN/e2e.test.tmp" "$KIND_BIN/e2e.test"
		stamp e2e.test "$spec"
		timing e2e.test $((SECONDS - t0)) "$spec"
	fi
	check e2e.test "$KIND_K8S_VERSION" "$KIND_BIN/e2e.test" --version
	# ginkgo from the wrapper module too, so it is exactly the version the
	# suite was compiled against.
	gv=$(modver "$k8s_mod" github.com/onsi/ginkgo/v2)
	if ! fresh ginkgo "github.com/onsi/ginkgo/v2@$gv"; then
		log "go build ginkgo (github.com/onsi/ginkgo/v2@$gv)"
		t0=$SECONDS
		(cd "$k8s_mod" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice -n 10 \
			go build -trimpath -ldflags "-s -w" -o "$KIND_BIN/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo)
		mv "$KIND_BIN/ginkgo.tmp" "$KIND_BIN/ginkgo"
		stamp ginkgo "github.com/onsi/ginkgo/v2@$gv"
		timing ginkgo $((SECONDS - t0)) "github.com/onsi/ginkgo/v2@$gv"
	fi
	check ginkgo "${gv#v}" "$KIND_BIN/ginkgo" version
}

want k8s && build_k8s
want etcd && build_etcd
want coredns && build_coredns
want kind && build_kind
want e2e && build_e2e

for line in "${summary[@]}"; do log "$line"; done
log "binaries in ${KIND_BIN#"$REPO_ROOT"/}: $(cd "$KIND_BIN" && ls | tr '\n' ' ')"
