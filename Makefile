# edgegw — see README.md. Every target works from a clean clone.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DIST := dist
# staticcheck: pinned (the module proxy serves this tag; it lists no versions).
STATICCHECK := v0.7.0
ERRCHECK := v1.9.0

# Debian versions must start with a digit: a tag, else 0.1.0~git<date>.<commit>.
DEBVERSION ?= $(shell git describe --tags --abbrev=0 2>/dev/null || echo 0.1.0~git$$(git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0))

.PHONY: all build test lint unit qemu-test deb-test demo cross deb fuzz bench clean proto

all: build

## build: bin/edgegw for this machine
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/edgegw ./cmd/edgegw

## test: install missing test packages (as root), lint, race tests, ARM tests under qemu, package checks
test: lint unit qemu-test deb-test

lint:
	@scripts/deps.sh test
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 GOARCH=arm GOARM=6 $(GO) vet ./...   # 32-bit: int overflows, alignment
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...
	# Every error is handled or visibly dropped (_ =); test-only helper
	# packages (internal/test*, internal/faultfs) are left out.
	$(GO) run github.com/kisielk/errcheck@$(ERRCHECK) -ignoretests -exclude scripts/lint/errcheck-excludes.txt \
	  $$($(GO) list ./... | grep -v '/internal/test\|/internal/faultfs')

unit:
	$(GO) test -race -timeout 10m ./...

qemu-test:
	scripts/qemu-test.sh

deb-test:
	scripts/test-deb.sh
	scripts/test-deb-chroot.sh

## deb: .deb packages for armhf (GOARM=6: every Raspberry Pi), arm64, amd64;
##      MAINTAINER="Name <mail>" sets the Maintainer field and changelog signature
deb: cross
	@set -e; for pair in armhf:armv6 arm64:arm64 amd64:amd64; do \
	  scripts/package/build-deb.sh $${pair%%:*} dist/edgegw-linux-$${pair##*:} $(DEBVERSION) dist; \
	done; ls -l dist/*.deb

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

## proto: regenerate gateway/sparkplug/spb from its .proto (needs Debian's protobuf-compiler)
PROTOC_GEN_GO := v1.36.12
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	cd gateway/sparkplug/spb && PATH=$(CURDIR)/bin:$$PATH protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto

## fuzz: each fuzz target for FUZZTIME (make test runs only their seed corpus)
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./buffer -run TestCrashStates -crash.states 20000 -timeout 30m
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## bench: the figures of docs/BENCHMARKS.md
bench:
	scripts/bench/run.sh

clean:
	rm -rf bin $(DIST) .demo
