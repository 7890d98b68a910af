# gtun — see README.md. Targets that touch the network need root.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/gtun/gtun/pkg/cli.Version=$(VERSION) -X github.com/gtun/gtun/pkg/cli.Commit=$(COMMIT)
# Packages with goroutines and shared state: run under the race detector.
RACE_PKGS := ./pkg/...

.PHONY: all build man tools deps deb test unit integration vet fmt-check demo bench clean install uninstall dist dist-check

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gtun ./gtun
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gtund ./gtund

# Man pages: docs/man/PAGE is rendered from docs/man/PAGE.md by go-md2man
# (a tool of go.mod). The pages are committed, so that installing needs no
# Go; docs/man's test fails when one is not the rendering of its source.
MAN_PAGES := gtun.8 gtund.8 gtun.toml.5 gtund.toml.5
man:
	@for p in $(MAN_PAGES); do $(GO) tool go-md2man -in docs/man/$$p.md -out docs/man/$$p; done

# Helpers for the test topology, demo and bench (not installed anywhere).
tools:
	CGO_ENABLED=0 $(GO) build -o bin/podhttp ./tools/podhttp
	CGO_ENABLED=0 $(GO) build -o bin/benchreport ./tools/benchreport
	CGO_ENABLED=0 $(GO) build -o bin/wanemu ./tools/wanemu
	CGO_ENABLED=0 $(GO) build -o bin/poddns ./tools/poddns

deps:
	./scripts/deps.sh

# Modules of go.mod with newer releases (lists them; upgrading is a
# separate step).
.PHONY: deps-check
deps-check:
	GO=$(GO) ./scripts/deps-check.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The end-to-end suites: the real binaries in network namespaces, and
# scripts/install.sh into temporary roots. They need root.
INTEGRATION_PKGS := ./test/integration/ ./test/install/
# Every package but the suites under test/ (test/release, which builds the
# release tarballs for minutes, runs in make test only).
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/test/')
# Integration tests that can share the machine run in parallel, each in its
# own topology; this bounds how many at once (see docs/testing.md). The
# timeout is the whole package's: generous, for a loaded machine.
INTEGRATION_PARALLEL ?= 4
TEST_TIMEOUT ?= 30m

# Everything, as root: fmt, vet, build, every test (a missing prerequisite
# fails loudly when CI is set), then the race detector on the concurrent
# packages. The suites under test/ run one package at a time (-p 1): the
# release suite builds tarballs for minutes, and beside it the integration
# suite's serial tests (iperf3 flows, floods, failover times) ran on a
# machine loaded by someone else.
test: deps fmt-check vet build tools
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(UNIT_PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 1 -parallel $(INTEGRATION_PARALLEL) ./test/...
	$(GO) test -count=1 -race $(RACE_PKGS)

# The tests that need no root, run as an unprivileged user: as root,
# scripts/unpriv-exec.sh runs each test binary as UNIT_USER (default
# nobody) with setpriv; as anyone else, as that user. GTUN_UNIT=1 makes the
# tests that need root (testnet.Require) skip, even with CI set: make test
# and make integration run them. About a minute.
unit:
	GTUN_UNIT=1 $(GO) test -count=1 -exec $(CURDIR)/scripts/unpriv-exec.sh $(UNIT_PKGS)

# The end-to-end and install tests only (root).
integration: deps build tools
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -parallel $(INTEGRATION_PARALLEL) $(INTEGRATION_PKGS)

demo: deps build tools
	./scripts/demo.sh

bench: deps build tools
	./scripts/bench.sh

# Each fuzz target (FuzzXxx in a *_test.go) runs for FUZZTIME; `make test`
# runs only their seeds (testdata/fuzz/ and f.Add). A failure leaves the
# input in the package's testdata/fuzz/FuzzXxx/: fix it and keep it as a seed.
FUZZTIME ?= 30s
# Minimising each new interesting input may take 60 s by default, which can
# eat a short run whole (the config targets' inputs are whole files).
FUZZMINIMIZE ?= 5s
.PHONY: fuzz
fuzz:
	@set -e; for f in $$(grep -l '^func Fuzz' $$(git ls-files '*_test.go')); do \
		pkg=./$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; \
		done; \
	done

.PHONY: scale scale-ha
scale: deps build
	./scripts/scale.sh

# 5,000 sessions over two gtund replicas sharing etcd (docs/ha.md).
scale-ha: deps build
	./scripts/scale-ha.sh

# scripts/install.sh: binaries, units, example configs and keys (DESTDIR,
# PREFIX honoured; ARGS="--client --enable" etc.).
install: build
	./scripts/install.sh $(ARGS)

uninstall:
	./scripts/uninstall.sh $(ARGS)

# Release tarballs for linux/amd64 and linux/arm64 plus SHA256SUMS in dist/,
# reproducible (see scripts/dist.sh); dist-check builds them twice and
# compares (minutes: it starts from an empty build cache).
dist:
	VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) ./scripts/dist.sh

dist-check:
	VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) ./scripts/dist.sh --check

# Debian packages dist/gtun_VERSION_ARCH.deb and dist/gtund_VERSION_ARCH.deb
# for amd64 and arm64, made with dpkg-deb from the tarballs of make dist
# (see scripts/deb.sh).
.PHONY: deb
deb: dist
	VERSION=$(VERSION) COMMIT=$(COMMIT) ./scripts/deb.sh

clean:
	rm -rf bin bench/results dist
