# meshmetrics build, test and generation targets. `make help` lists them.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
PROTO_ROOT := adapter/mixerpb/proto
# `go list -m` does not download: on a fresh machine the module directory would
# be empty, so download first (a no-op when the module cache has it).
GOGO_DIR = $(shell $(GO) mod download github.com/gogo/protobuf && $(GO) list -m -f '{{.Dir}}' github.com/gogo/protobuf)
GOOGLEAPIS_DIR = $(shell $(GO) mod download github.com/gogo/googleapis && $(GO) list -m -f '{{.Dir}}' github.com/gogo/googleapis)
MODULE := github.com/meshmetrics/meshmetrics

# Import-path mappings so that gogo-generated code uses gogo's well-known types.
GOGO_M := Mgoogle/protobuf/any.proto=github.com/gogo/protobuf/types,Mgoogle/protobuf/duration.proto=github.com/gogo/protobuf/types,Mgoogle/protobuf/timestamp.proto=github.com/gogo/protobuf/types,Mgoogle/protobuf/descriptor.proto=github.com/gogo/protobuf/protoc-gen-gogo/descriptor,Mgoogle/rpc/status.proto=github.com/gogo/googleapis/google/rpc

.PHONY: help run demo demo-mixerless test test-tools test-unit test-race fuzz check-generated generate tools deps bench image image-push lint fmt vet

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

run: ## run the adapter on its embedded default (Prometheus exposition on :42422/metrics, gRPC on :50000)
	$(GO) run ./cmd/meshmetrics

demo: ## start the adapter, drive it with mockmixer and the samples, print the series
	./cmd/mockmixer/demo.sh

demo-mixerless: ## the same without Mixer: the samples as --config-dir, mockmixer playing Envoy's access logs
	./cmd/mockmixer/demo.sh mixerless

test: deps check-generated vet lint test-tools test-race fuzz ## every test (installs protoc, prometheus, etcd and the pinned linter when absent)

test-tools: ## build the tools the deploy tests run (kube-apiserver, actionlint) into ~/.cache/meshmetrics-tools, once per version
	$(GO) run ./deploy/internal/toolcache/buildtools

test-race: ## go test -race ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# Every fuzz target of the code (func FuzzXxx(f *testing.F)), each for its
# execution budget: .ci/fuzz derives the list and says how budgets are set.
FUZZTIME ?=

fuzz: ## run every fuzz target for its execution budget (FUZZTIME=30s overrides)
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./.ci/fuzz

test-unit: ## go test ./... without the race detector
	$(GO) test -count=1 ./...

# The linter is pinned and installed into .bin by version, so a bump reinstalls it.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

$(GOLANGCI_LINT):
	@mkdir -p $(BIN)/golangci-lint.tmp
	GOBIN=$(BIN)/golangci-lint.tmp $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint.tmp/golangci-lint $@ && rmdir $(BIN)/golangci-lint.tmp

lint: $(GOLANGCI_LINT) ## golangci-lint, pinned (.golangci.yml says which checks and why)
	$(GOLANGCI_LINT) run ./...

fmt: $(GOLANGCI_LINT) ## format every Go file (gofmt, goimports with the module's imports grouped last)
	$(GOLANGCI_LINT) fmt ./...

vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps: ## install the Debian packages the tests need (protoc, prometheus) when absent
	./.ci/install-deps

tools: ## build the pinned protoc plugins into .bin/
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/gogo/protobuf/protoc-gen-gogofaster

GEN_TMP := $(CURDIR)/.gen

generate: tools ## regenerate protobuf code, descriptors and the adapter/template CRs
	rm -rf $(GEN_TMP) && mkdir -p $(GEN_TMP)
	cd $(PROTO_ROOT) && for dir in policy/v1beta1 mixer/adapter/model/v1beta1 mixer/template/metric; do \
	  protoc --plugin=protoc-gen-gogofaster=$(BIN)/protoc-gen-gogofaster \
	    -I . -I $(GOGO_DIR) -I $(GOGO_DIR)/protobuf -I $(GOOGLEAPIS_DIR) \
	    --gogofaster_out=plugins=grpc,$(GOGO_M):$(GEN_TMP) $$dir/*.proto || exit 1; done
	cd config && protoc --plugin=protoc-gen-gogofaster=$(BIN)/protoc-gen-gogofaster \
	  -I . -I $(GOGO_DIR) -I $(GOGO_DIR)/protobuf \
	  --gogofaster_out=$(GOGO_M):$(GEN_TMP) config.proto
	for d in policypb modelpb metricpb; do \
	  rm -f adapter/mixerpb/$$d/*.pb.go; mkdir -p adapter/mixerpb/$$d; \
	  cp $(GEN_TMP)/$(MODULE)/adapter/mixerpb/$$d/*.pb.go adapter/mixerpb/$$d/; done
	cp $(GEN_TMP)/$(MODULE)/config/config.pb.go config/config.pb.go
	cd config && protoc -I . -I $(GOGO_DIR) -I $(GOGO_DIR)/protobuf \
	  --include_imports --include_source_info --descriptor_set_out=config.proto_descriptor config.proto
	cd $(PROTO_ROOT) && protoc -I . -I $(GOGO_DIR)/protobuf \
	  --include_imports --include_source_info \
	  --descriptor_set_out=../metricpb/template_handler_service.descriptor_set \
	  mixer/template/metric/template_handler_service.proto
	$(GO) run ./config/gencr -adapter-descriptor config/config.proto_descriptor \
	  -template-descriptor adapter/mixerpb/metricpb/template_handler_service.descriptor_set \
	  -out deploy/helm/meshmetrics/files
	$(GO) run ./deploy/render
	cp deploy/kubernetes/adapter.yaml deploy/kubernetes/template-metric.yaml adapter/internal/mixerless/
	$(GO) run ./config/gendoc -descriptor config/config.proto_descriptor -out docs/params.md
	gofmt -w config/config.pb.go adapter/mixerpb/*/*.pb.go
	cd adapter/internal/sinks/remotewrite/prompb && protoc --plugin=protoc-gen-gogofaster=$(BIN)/protoc-gen-gogofaster \
	  -I . -I $(GOGO_DIR) -I $(GOGO_DIR)/protobuf \
	  --gogofaster_out=$(GOGO_M):$(GEN_TMP) types.proto remote.proto
	rm -f adapter/internal/sinks/remotewrite/prompb/*.pb.go
	cp $(GEN_TMP)/$(MODULE)/adapter/internal/sinks/remotewrite/prompb/*.pb.go adapter/internal/sinks/remotewrite/prompb/
	gofmt -w adapter/internal/sinks/remotewrite/prompb/*.pb.go
	rm -rf $(GEN_TMP)

check-generated: deps ## fail when generated files differ from what `make generate` writes
	./.ci/check-generated

bench: ## run the benchmark harness (see docs/BENCHMARKS.md)
	./docs/bench/run.sh

# The image the chart deploys by default is the one the release workflow
# (.github/workflows/release.yml) publishes: ghcr.io/meshmetrics/meshmetrics,
# tagged with the release's version (the chart's appVersion).
IMAGE ?= ghcr.io/meshmetrics/meshmetrics
IMAGE_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DOCKER ?= docker
# The platform of a local build: the Docker engine's own.
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
# What image-push publishes (needs buildx, and QEMU or native builders for
# the foreign architectures' base image; the Go build cross-compiles).
PLATFORMS ?= linux/amd64,linux/arm64

image: ## build IMAGE:IMAGE_VERSION for this machine from deploy/Dockerfile (buildx when present, else plain docker build)
	@if $(DOCKER) buildx version >/dev/null 2>&1; then \
	  echo "make image: docker buildx build (BuildKit), linux/$(IMAGE_ARCH)"; \
	  set -x; $(DOCKER) buildx build --load --platform linux/$(IMAGE_ARCH) -f deploy/Dockerfile \
	    --build-arg VERSION=$(IMAGE_VERSION) -t $(IMAGE):$(IMAGE_VERSION) . ; \
	else \
	  echo "make image: no buildx, classic docker build, linux/$(IMAGE_ARCH)"; \
	  set -x; DOCKER_BUILDKIT=0 $(DOCKER) build -f deploy/Dockerfile \
	    --build-arg VERSION=$(IMAGE_VERSION) --build-arg BUILDPLATFORM=linux/$(IMAGE_ARCH) \
	    --build-arg TARGETOS=linux --build-arg TARGETARCH=$(IMAGE_ARCH) -t $(IMAGE):$(IMAGE_VERSION) . ; \
	fi

image-push: ## build IMAGE:IMAGE_VERSION for PLATFORMS and push it (needs buildx)
	@$(DOCKER) buildx version >/dev/null 2>&1 || { echo "make image-push: a multi-platform image needs docker buildx"; exit 1; }
	$(DOCKER) buildx build --push --platform $(PLATFORMS) -f deploy/Dockerfile \
	  --build-arg VERSION=$(IMAGE_VERSION) -t $(IMAGE):$(IMAGE_VERSION) .
