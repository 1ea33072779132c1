# edgegw — see README.md. Every target works from a clean clone.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DIST := dist

.PHONY: all build test lint unit qemu-test demo cross fuzz bench clean

all: build

## build: bin/edgegw for this machine
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/edgegw ./cmd/edgegw

## test: install missing test packages (as root), lint, race tests, ARM tests under qemu
test: lint unit qemu-test

lint:
	@scripts/deps.sh test
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -timeout 10m ./...

qemu-test:
	scripts/qemu-test.sh

## demo: local broker cluster + simulated device + gateway; readings until Ctrl-C
demo:
	scripts/demo.sh

## cross: static, stripped binaries for the supported boards
cross:
	@mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/edgegw-linux-armv6 ./cmd/edgegw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/edgegw-linux-armv7 ./cmd/edgegw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/edgegw-linux-arm64 ./cmd/edgegw
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/edgegw-linux-amd64 ./cmd/edgegw
	@ls -l $(DIST)/

## fuzz: each fuzz target for FUZZTIME (make test runs only their seed corpus)
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./gateway -run '^$$' -fuzz FuzzParseConfig -fuzztime $(FUZZTIME)
	$(GO) test ./drivers/modbus -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)

## bench: the figures of docs/BENCHMARKS.md
bench:
	scripts/bench/run.sh

clean:
	rm -rf bin $(DIST) .demo
