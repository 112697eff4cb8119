# federate: build, test, lab and benchmarks. Tool versions are pinned here so
# that CI and every developer run the same ones; tools install into .tools/.

GO                         ?= go
TOOLS                      := $(CURDIR)/.tools/bin
STATICCHECK_VERSION        := v0.8.2
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
PROTOC_VERSION             := 3.21
PROTOS                     := registry/registrypb/registry.proto hub/hubpb/hub.proto agent/agentpb/agent.proto
LAB_DIR                    ?= .lab
LAB_FLAGS                  ?=
VERSION                    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)
COMMIT                     := $(shell git rev-parse HEAD 2>/dev/null)
# What each binary's 'version' command and federate_build_info report.
LDFLAGS                    := -X github.com/federate/federate/cmd/internal/cli.version=$(VERSION) -X github.com/federate/federate/cmd/internal/cli.commit=$(COMMIT)

export PATH := $(TOOLS):$(PATH)

# The real servers the tests run, built once per pinned version outside the
# repository (scripts/build-server.sh): the kube-apiserver (the version of
# internal/tools/kube-apiserver/go.mod), SPIRE's server and Istio's istiod.
KUBE_VERSION               := v1.37.2
FEDERATE_CACHE             ?= $(HOME)/.cache/federate
export FEDERATE_CACHE
export FEDERATE_KUBE_APISERVER := $(FEDERATE_CACHE)/kube-apiserver-$(KUBE_VERSION)
SPIRE_VERSION              := v1.13.3
export FEDERATE_SPIRE_SERVER := $(FEDERATE_CACHE)/spire-server-$(SPIRE_VERSION)
ISTIO_PIN                  := v0.0.0-20260827124520-eed52ebb66ad
export FEDERATE_PILOT_DISCOVERY := $(FEDERATE_CACHE)/pilot-discovery-$(ISTIO_PIN)
SHELL_SCRIPTS              := $(wildcard kind-clusters/*.sh scripts/*.sh)

.PHONY: all build packages images lab lab-down test check fmt vet staticcheck tidy proto-check race fuzz-seeds bench generate tools clean setup servers kube-apiserver spire-server pilot-discovery shellcheck

all: build

## build: compile the binaries into bin/
build:
	@[ -x bin/federate ] || echo "building bin/federate, bin/eastwest-gateway and bin/federate-agent: the first build downloads and compiles every dependency (14 minutes measured on 2 busy cores with empty caches; later builds take seconds)"
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

## packages: the VM agent's dist/federate-agent_<version>-1_amd64.deb and
## dist/federate-agent-<version>-1.x86_64.rpm (nfpm), version from 'git describe'
packages:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/federate-agent ./cmd/federate-agent
	$(GO) run ./deploy/packages/cmd/mkpkg --binary bin/federate-agent --version "$(VERSION)" --out dist

## images: OCI image archives of the hub/control plane (federate) and the
## gateway (eastwest-gateway), amd64 and arm64 in one index each, built
## without a container engine: dist/federate.oci.tar and
## dist/eastwest-gateway.oci.tar, named $(IMAGE_REPOSITORY)/NAME:$(IMAGE_TAG)
## (the same two settings as the chart's image.repository and image.tag)
IMAGE_REPOSITORY ?= federate
IMAGE_TAG        ?= $(VERSION)
IMAGE_PLATFORMS  := amd64 arm64
IMAGE_SOURCE     := https://github.com/federate/federate
images:
	@[ -x bin/linux_arm64/federate ] || echo "building the images' binaries for $(IMAGE_PLATFORMS): the first arm64 build compiles every dependency again (about 10 minutes on 2 busy cores; later builds take seconds)"
	@for arch in $(IMAGE_PLATFORMS); do \
		echo "CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags='-s -w $(LDFLAGS)' -o bin/linux_$$arch/ ./cmd/federate ./cmd/eastwest-gateway"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags='-s -w $(LDFLAGS)' -o bin/linux_$$arch/ ./cmd/federate ./cmd/eastwest-gateway || exit 1; \
	done
	@mkdir -p dist
	@ca=; [ -f /etc/ssl/certs/ca-certificates.crt ] && ca=/etc/ssl/certs/ca-certificates.crt; \
	for name in federate eastwest-gateway; do \
		$(GO) run ./deploy/images/cmd/mkimage --name $$name --reference $(IMAGE_REPOSITORY)/$$name:$(IMAGE_TAG) \
			$(foreach arch,$(IMAGE_PLATFORMS),--binary linux/$(arch)=bin/linux_$(arch)/$$name) \
			--version "$(VERSION)" --source $(IMAGE_SOURCE) --revision "$$(git rev-parse HEAD 2>/dev/null)" \
			--created "$$(git log -1 --format=%cI 2>/dev/null)" \
			--ca-certificates "$$ca" --out dist/$$name.oci.tar || exit 1; \
	done

## lab: build, then start the embedded lab (stop it with 'make lab-down');
## LAB_FLAGS=--ha runs the hub as 3 replicas on a 3-member etcd
lab: build
	bin/federate lab up --dir $(LAB_DIR) $(LAB_FLAGS)

## lab-down: stop the lab and remove $(LAB_DIR); without a lab, says so and succeeds
lab-down:
	@test -x bin/federate || $(MAKE) --no-print-directory build
	bin/federate lab down --dir $(LAB_DIR)

## test: set up this machine, then every check and every test (what CI runs)
test: setup check

## setup: install the commands the tests run (Debian packages, as root) or
## name the missing ones, then build the real servers
setup:
	@sh scripts/setup.sh
	@$(MAKE) --no-print-directory servers

## servers: build the kube-apiserver, spire-server and pilot-discovery the
## tests run into $(FEDERATE_CACHE), side by side (once; reused after)
servers:
	@$(MAKE) --no-print-directory -j3 kube-apiserver spire-server pilot-discovery

## check: formatting, vet, staticcheck, tidy, generated code, race tests
check: fmt vet staticcheck tidy proto-check shellcheck race

kube-apiserver:
	@sh scripts/build-server.sh kube-apiserver $(KUBE_VERSION) >/dev/null

spire-server:
	@sh scripts/build-server.sh spire-server $(SPIRE_VERSION) >/dev/null

pilot-discovery:
	@sh scripts/build-server.sh pilot-discovery $(ISTIO_PIN) >/dev/null

## shellcheck: the kind lab's and the repository's shell scripts
shellcheck:
	@command -v shellcheck >/dev/null || { echo "shellcheck is missing: apt-get install shellcheck"; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## vet: go vet, and the binaries build for macOS and Windows too (the
## tests need Linux)
vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) build ./cmd/...
	GOOS=windows $(GO) build ./cmd/...

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

tidy:
	@cp go.mod .tidy.mod.bak && cp go.sum .tidy.sum.bak; \
	$(GO) mod tidy; \
	status=0; \
	if ! cmp -s go.mod .tidy.mod.bak || ! cmp -s go.sum .tidy.sum.bak; then \
		echo "go.mod or go.sum is not tidy: run 'go mod tidy' and commit the result"; status=1; \
	fi; \
	mv .tidy.mod.bak go.mod; mv .tidy.sum.bak go.sum; exit $$status

## proto-check: the generated protobuf code matches the .proto files
proto-check: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler"; exit 1; }
	@tmp=$$(mktemp -d); \
	protoc -I . --go_out=$$tmp --go_opt=paths=source_relative --go-grpc_out=$$tmp --go-grpc_opt=paths=source_relative $(PROTOS); \
	status=0; \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		if ! cmp -s $$tmp/$$f $$f; then echo "$$f is stale: run 'make generate'"; status=1; fi; \
	done; rm -rf $$tmp; exit $$status

## race: unit and integration tests with the race detector (fuzz seeds run too)
race: servers
	$(GO) test -race -count=1 -timeout 20m ./...

## bench: control-plane benchmarks (docs/benchmarks.md), then the gateway
## against direct, HAProxy and nginx (docs/benchmarks-gateway.md; installs
## haproxy and nginx from Debian when missing)
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout=30m ./member/ ./hub/ ./controlplane/
	sh scripts/bench-gateway.sh

## generate: regenerate protobuf code
generate: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

tools: $(TOOLS)/staticcheck $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

clean:
	rm -rf bin dist .tools
