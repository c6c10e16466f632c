# berth — Kubernetes node bundle. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := /usr/local/go/bin:$(CURDIR)/_output/tools:$(PATH)

BIN        := $(CURDIR)/_output/bin
GO         ?= go
GOFLAGS    ?= -buildvcs=false
export GOFLAGS
# The whole suite; integration tests under test/integration need root.
# Packages run one at a time (-p 1): the root suites share the CPU-bound
# kernel datapath (shaping, BPF) and containerd, and two cores.
TEST_TIMEOUT ?= 40m

.PHONY: help build test unit integration vet generate perf e2e e2e-upstream up down clean install critest netns-up netns-down

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build every binary into _output/bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth ./cmd/berth-cni
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth-netd ./cmd/berth-netd
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth-cri ./cmd/berth-cri
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/berth-csi ./cmd/berth-csi
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/berth-pause ./cmd/berth-pause

install: build ## install the CNI plugin as /opt/cni/bin/berth and the daemons in /usr/local/bin (root)
	install -D -m 0755 $(BIN)/berth /opt/cni/bin/berth
	install -D -m 0755 $(BIN)/berth-netd /usr/local/bin/berth-netd
	install -D -m 0755 $(BIN)/berth-cri /usr/local/bin/berth-cri
	install -D -m 0755 $(BIN)/berth-csi /usr/local/bin/berth-csi

vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '_bpfe[lb].go$$' || true); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: ## unit + root integration tests (installs its own dependencies)
	bash hack/install-deps.sh
	bash hack/install-cri-tools.sh
	$(MAKE) --no-print-directory vet
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

unit: ## unit tests only (no root needed)
	BERTH_SKIP_INTEGRATION=1 $(GO) test -count=1 ./...

integration: ## root integration tests only
	$(GO) test -count=1 -v -timeout $(TEST_TIMEOUT) ./test/integration/...

generate: ## regenerate the committed bpf2go output from ebpf/*.c (installs Debian's clang)
	WITH_CLANG=1 bash hack/install-deps.sh
	$(GO) generate ./ebpf/...

critest: ## CRI conformance (critest v1.36) against berth-cri and containerd's own CRI, side by side
	bash hack/install-deps.sh
	bash hack/install-cri-tools.sh
	BERTH_CRITEST=1 $(GO) test -count=1 -v -timeout 120m -run TestCritest ./test/critest/

perf: ## network, dataplane, CRI, CSI and in-cluster kind reports (iperf3, shaping, RTT, ADD latency, pod start latency, RSS, fio) under test/perf/results
	bash hack/perf.sh

e2e: ## end-to-end suites (test/e2e) against the kind cluster from `make up` (context kind-berth), then the upstream e2e subsets
	BERTH_E2E=1 PATH=$(CURDIR)/_output/kind/bin:$$PATH $(GO) test -count=1 -v -timeout 60m ./test/e2e/
	bash hack/kind/e2e-upstream.sh

e2e-upstream: ## upstream Kubernetes e2e subsets (e2e.test) on kind-berth and kind-ref side by side: test/e2e/results/upstream.md
	bash hack/kind/e2e-upstream.sh

up: ## build offline (or reuse) and start the 3-node kind cluster "berth" on berth-cri, berth-cni and berth-csi, then run the demo
	bash hack/kind/up.sh

down: ## delete the kind cluster "berth"
	bash hack/kind/cluster.sh delete --name berth

netns-up: ## standalone two-node berth-cni demo in network namespaces (no Kubernetes)
	bash hack/demo.sh up

netns-down: ## remove the netns demo
	bash hack/demo.sh down

clean: ## remove build output and the demo
	-bash hack/demo.sh down
	rm -rf _output
