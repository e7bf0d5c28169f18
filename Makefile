# Conflux: the one entry point. CI runs exactly these targets (see .ci/run).
# `make` with no target prints the list below.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin

# staticcheck 2026.2.2; the first line that supports Go 1.26 is 2026.1 (v0.7.0).
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck
# A stamp per version, so bumping STATICCHECK_VERSION reinstalls.
STATICCHECK_STAMP := $(BIN)/.staticcheck-$(STATICCHECK_VERSION)

# Version stamped into bin/conflux (`conflux version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

BENCH_PKG ?= ./core/...
BENCHTIME ?= 2s
FUZZTIME ?= 20s

.PHONY: help test verify bench fuzz run build clean image compose-up compose-down compose-test

help: ## print the targets
	@echo 'Targets:'
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / { printf "  %-13s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo 'Variables: BENCH_PKG=$(BENCH_PKG) BENCHTIME=$(BENCHTIME) FUZZTIME=$(FUZZTIME)'

test: ## install Debian test tools if needed, then go test with -race
	bash scripts/install-test-deps.sh
	go test -race -shuffle=on -count=1 ./...
	@# rocketmq-client-go's orderly consumer has a data race of its own, so
	@# the orderly tests skip under -race; they run here without it.
	go test -count=1 -run 'Orderly' ./gateway/remoting/

verify: $(STATICCHECK_STAMP) ## gofmt, go vet, staticcheck, go mod tidy diff
	@echo '>> gofmt -l'
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		files=$$(git ls-files --cached --others --exclude-standard -- '*.go' ':!:*/testdata/*'); \
	else \
		files=$$(find . -name '*.go' -not -path './bin/*' -not -path './data/*' -not -path '*/testdata/*'); \
	fi; \
	existing=(); for f in $$files; do [ -f "$$f" ] && existing+=("$$f"); done; \
	if [ $${#existing[@]} -gt 0 ]; then \
		out=$$(gofmt -l "$${existing[@]}"); \
		if [ -n "$$out" ]; then echo 'gofmt: these files need formatting (run gofmt -w):'; echo "$$out"; exit 1; fi; \
	fi
	@echo '>> go vet ./...'
	go vet ./...
	@echo '>> staticcheck ./...'
	$(STATICCHECK) ./...
	@echo '>> go mod tidy -diff'
	@go mod tidy -diff || { echo 'go.mod/go.sum are not tidy: run go mod tidy'; exit 1; }

$(STATICCHECK_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@rm -f $(BIN)/.staticcheck-*
	@touch $@

bench: ## go test -bench over BENCH_PKG (default ./core/...)
	go test -run '^$$' -bench . -benchmem -benchtime=$(BENCHTIME) $(BENCH_PKG)

fuzz: ## run every fuzz target for FUZZTIME (default 20s)
	@# go test -list prints a package's Fuzz names, then "ok <pkg> <time>".
	@targets=$$(go test -list '^Fuzz' ./... | \
		awk '/^Fuzz/ { names[n++] = $$1; next } /^ok / { for (i = 0; i < n; i++) print $$2, names[i]; n = 0 }'); \
	if [ -z "$$targets" ]; then echo 'no fuzz targets found'; exit 0; fi; \
	while read -r pkg name; do \
		echo ">> $$pkg $$name"; \
		go test -run '^$$' -fuzz="^$${name}\$$" -fuzztime=$(FUZZTIME) "$$pkg" </dev/null; \
	done <<< "$$targets"

run: bin/conflux ## build bin/conflux and run `conflux serve` (ARGS='--flag=value ...' adds flags)
	./bin/conflux serve $(ARGS)

build: bin/conflux ## go build ./... and bin/conflux
	go build ./...

# Always handed to go build, which knows whether anything changed.
.PHONY: bin/conflux
bin/conflux:
	go build -ldflags '$(LDFLAGS)' -o bin/conflux ./cmd/conflux

# The compose cluster (deploy/compose): an image FROM scratch holding the
# static binary, so nothing is pulled.
IMAGE ?= conflux:local
COMPOSE := docker-compose -f deploy/compose/docker-compose.yml -p conflux

image: ## build the FROM-scratch Docker image $(IMAGE) from a static bin/image/conflux
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '$(LDFLAGS)' -o bin/image/conflux ./cmd/conflux
	cp deploy/compose/Dockerfile bin/image/Dockerfile
	docker build -q -t $(IMAGE) bin/image

compose-up: image ## start the three-node cluster (172.29.71.11-13; see deploy/compose)
	CONFLUX_IMAGE=$(IMAGE) $(COMPOSE) up -d

compose-down: ## stop the cluster and delete its volumes
	CONFLUX_IMAGE=$(IMAGE) $(COMPOSE) down -v

compose-test: ## the compose fault test alone (also part of make test)
	go test -race -count=1 -v ./deploy/compose/

clean: ## remove bin/ and data/
	rm -rf bin data
