#!/usr/bin/env bash
# e2e-upstream.sh [--context CTX]... [--subset NAME]... [--procs N] [--no-report] [--notes FILE]
#
# Runs subsets of the upstream Kubernetes e2e suite (e2e.test and ginkgo from
# hack/kind/build-k8s.sh e2e, the same Kubernetes version as the clusters)
# against kind clusters, and writes test/e2e/results/upstream.{md,json} with
# the counts side by side (test/e2e/upstream/report).
#
#   --context   kubectl context; repeatable (default: kind-berth and kind-ref,
#               each only if it exists)
#   --subset    net          [sig-network] Networking Granular Checks
#               pods         [sig-node] Pods (and Pods Extended)
#               conformance  [Conformance] of sig-node, sig-network and
#                            sig-storage, less what net and pods already run
#               storage      External Storage [Driver: berth.csi.dev], the
#                            storage suites driven by
#                            test/e2e/upstream/berth-csi-driver.yaml (berth
#                            clusters only: the reference cluster has no CSI
#                            driver)
#               repeatable; default: all four
#   --procs     ginkgo parallel processes (default 2; the machine has 2 cores)
#   --no-report do not regenerate test/e2e/results/upstream.{md,json}
#   --notes     Markdown file put into the report (how the run was made)
#
# Every subset drops what test/e2e/upstream/skips.tsv lists, each rule with
# its reason ([Serial], [Slow], [Disruptive], [Flaky], features the clusters
# lack, ...). The e2e test images are built offline and loaded first
# (test/e2e/upstream/images.sh). JUnit reports and logs land in
# _output/e2e-upstream/results/<context>/<subset>/. Exit status: 1 when a spec
# failed on a berth cluster without failing on the reference cluster too (a
# spec failing on both is the suite's or the environment's problem and is
# only reported), or, with --no-report, when any berth run failed; else 0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../versions.sh
. "$repo/hack/versions.sh"
export PATH=$here/docker-shim:$KIND_BIN:$PATH
log() { printf '[e2e-upstream] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

contexts=() subsets=() procs=2 report=1 notes=""
while [ $# -gt 0 ]; do
	case $1 in
	--context) contexts+=("$2"); shift 2 ;;
	--subset) subsets+=("$2"); shift 2 ;;
	--procs) procs=$2; shift 2 ;;
	--no-report) report=0; shift ;;
	--notes) notes=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
	*) sed -n '2p' "$0" >&2; exit 2 ;;
	esac
done
[ ${#subsets[@]} -gt 0 ] || subsets=(net pods conformance storage)
for s in "${subsets[@]}"; do
	case $s in net | pods | conformance | storage) ;; *) die "unknown subset $s" ;; esac
done
if [ ${#contexts[@]} -eq 0 ]; then
	for c in kind-berth kind-ref; do
		kubectl config get-contexts -o name 2>/dev/null | grep -qx "$c" && contexts+=("$c")
	done
fi
[ ${#contexts[@]} -gt 0 ] || die "no cluster: run 'make up' (kind-berth) and/or 'hack/kind/cluster.sh create --recipe reference --name ref' (kind-ref)"

bash "$here/build-k8s.sh" e2e
for b in e2e.test ginkgo kubectl kind; do command -v "$b" >/dev/null || die "$b is not built"; done

out=$REPO_ROOT/_output/e2e-upstream/results
mkdir -p "$out"
driver=$repo/test/e2e/upstream/berth-csi-driver.yaml
skips=$repo/test/e2e/upstream/skips.tsv

# focus regexes (Go regexp, matched against the full spec text)
focus_of() {
	case $1 in
	net) echo '\[sig-network\] Networking Granular Checks' ;;
	pods) echo '\[sig-node\] Pods ' ;;
	conformance) echo '\[sig-(node|network|storage)\] .*\[Conformance\]' ;;
	storage) echo 'External.Storage \[Driver: berth\.csi\.dev\]' ;;
	esac
}
# skip_of SUBSET: the skips.tsv rules for SUBSET joined into one regex (the
# conformance rules include what net and pods run, so nothing runs twice).
skip_of() {
	awk -F '\t' -v s="$1" '!/^#/ && NF >= 3 && ($1 == "*" || index("," $1 ",", "," s ",")) {print $2}' "$skips" | paste -sd'|' -
}

# recipe_of CTX: berth when the cluster's nodes run berth-cri
recipe_of() {
	local rt
	rt=$(kubectl --context "$1" get nodes -o jsonpath='{.items[0].status.nodeInfo.containerRuntimeVersion}')
	case $rt in berth*) echo berth ;; *) echo reference ;; esac
}

bash "$repo/test/e2e/upstream/images.sh" build
status=0
for ctx in "${contexts[@]}"; do
	kubectl config get-contexts -o name | grep -qx "$ctx" || die "no kubectl context $ctx"
	# One run per cluster at a time: a second one would delete the first
	# one's reports (runs against different clusters may overlap).
	exec 8>"$out/$ctx.lock"
	flock -n 8 || die "another e2e-upstream.sh is running against $ctx (lock ${out#"$REPO_ROOT"/}/$ctx.lock)"
	recipe=$(recipe_of "$ctx")
	cluster=${ctx#kind-}
	bash "$repo/test/e2e/upstream/images.sh" load "$cluster"
	kubectl --context "$ctx" wait --for=condition=Ready nodes --all --timeout=120s >/dev/null ||
		die "$ctx: not every node is Ready"
	mkdir -p "$out/$ctx"
	kcfg=$out/$ctx/kubeconfig
	kubectl config view --minify --flatten --context "$ctx" >"$kcfg"
	echo "$recipe" >"$out/$ctx/recipe"
	# Schedulable nodes (no NoSchedule taint). e2e.test counts them itself
	# only in its first ginkgo process; the others keep --num-nodes' -1 and
	# skip every "Requires at least 2 nodes" spec, so it is passed here.
	nodes=$(kubectl --context "$ctx" get nodes -o jsonpath='{range .items[*]}{.spec.taints[*].effect}{"\n"}{end}' | grep -vc NoSchedule || true)
	for subset in "${subsets[@]}"; do
		dir=$out/$ctx/$subset
		args=()
		if [ "$subset" = storage ]; then
			if [ "$recipe" != berth ] || ! kubectl --context "$ctx" get csidriver berth.csi.dev >/dev/null 2>&1; then
				log "$ctx: storage subset not run (no berth.csi.dev CSIDriver in this cluster)"
				rm -rf "$dir"
				continue
			fi
			# berth volumes, snapshots and clones live on one node, and the
			# suite's snapshot-restore specs do not keep their pods in the
			# source's topology segment (the clone specs do), so a restore
			# pod may land on the other worker, where no scheduler retry
			# can help it (the scheduler does not know where a data source
			# lives). The test driver's ClientNodeName pins every test pod
			# to one schedulable worker, picked here because the node names
			# depend on the cluster's name.
			client_node=$(kubectl --context "$ctx" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.taints[*].effect}{"\n"}{end}' | awk '!/NoSchedule/ {print $1}' | sort | head -n1)
			[ -n "$client_node" ] || die "$ctx: no schedulable node for the storage suite"
			{ cat "$driver"; printf '\n# added by e2e-upstream.sh for %s\nClientNodeName: %s\n' "$ctx" "$client_node"; } >"$out/$ctx/berth-csi-driver.yaml"
			args+=("--storage.testdriver=$out/$ctx/berth-csi-driver.yaml")
		fi
		rm -rf "$dir"
		mkdir -p "$dir"
		focus_of "$subset" >"$dir/focus"
		skip_of "$subset" >"$dir/skip"
		log "$ctx ($recipe): $subset, $procs processes (log: ${dir#"$REPO_ROOT"/}/ginkgo.log)"
		t0=$SECONDS
		rc=0
		# e2e.test flags: the cluster is kind ("local" provider: no cloud),
		# images are preloaded (never pulled, so no image pre-pull), no log
		# dumps of the whole cluster on failure (the JUnit holds the error).
		# ginkgo warns of a "version mismatch" (2.32.1 used by e2e): it reads
		# the go.mod above the e2e.test binary, which is the repository's,
		# not hack/kind/k8s's. e2e.test embeds the same ginkgo as the CLI
		# (both built from hack/kind/k8s), so the warning is harmless.
		(nice -n 5 ginkgo --procs="$procs" --timeout=6h --poll-progress-after=10m \
			--focus="$(cat "$dir/focus")" --skip="$(cat "$dir/skip")" \
			--junit-report=junit.xml --output-dir="$dir" --no-color \
			"$KIND_BIN/e2e.test" -- \
			--kubeconfig="$kcfg" --provider=local --num-nodes="$nodes" --report-dir="$dir" \
			--dump-logs-on-failure=false --e2e-verify-service-account=true \
			"${args[@]}") >"$dir/ginkgo.log" 2>&1 || rc=$?
		echo "$((SECONDS - t0))" >"$dir/seconds"
		echo "$rc" >"$dir/rc"
		log "$ctx: $subset done in $((SECONDS - t0))s, rc=$rc: $(grep -aE '^(Ran [0-9]+ of|(PASS|FAIL)!? --)' "$dir/ginkgo.log" | tr '\n' ' ')"
		if [ "$rc" != 0 ] && [ "$recipe" = berth ]; then status=1; fi
	done
done

if [ "$report" = 1 ]; then
	rc=0
	# built, not `go run`: go run turns the tool's exit status 3 into 1
	report_bin=$REPO_ROOT/_output/e2e-upstream/bin/upstream-report
	(cd "$repo" && go build -o "$report_bin" ./test/e2e/upstream/report)
	(cd "$repo" && "$report_bin" -check -results "$out" -skips "$skips" -notes "$notes" \
		-md test/e2e/results/upstream.md -json test/e2e/results/upstream.json) || rc=$?
	log "report: test/e2e/results/upstream.md"
	case $rc in
	0) status=0 ;;
	3) status=1 ;;
	*) die "the report failed (rc=$rc)" ;;
	esac
fi
exit "$status"
