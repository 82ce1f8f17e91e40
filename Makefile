# make run   — the echo server on 127.0.0.1:9876 (ARGS="-addr 0.0.0.0 9000" to change)
# make test  — installs what is missing, then vet, gofmt, staticcheck, race and cgocheck2 tests, GOMAXPROCS=1 and 2
# make bench — reference servers against cmd/echo, then ckv against cmd/kv, pinned; writes bench/out/ (REFRESH=1: also bench/results.svg)
# make asan  — the tests built with -asan: AddressSanitizer on the C side, leak check at exit
# make fuzz  — each fuzz target for FUZZTIME runs (about 10s each here) from testdata/fuzz; make test runs both
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all deps test vet run bench asan fuzz

all: test

# libevent 2.1 (core + pthreads) through pkg-config, a C compiler for cgo, and
# systemd-socket-activate for cmd/echo's socket activation test.
deps:
	@missing=""; \
	pkg-config --exists libevent_core libevent_pthreads 2>/dev/null || missing="libevent-dev pkg-config"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v systemd-socket-activate >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: installing $$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "deps: missing $$missing; run: sudo apt-get install -y $$missing" >&2; exit 1; \
	fi

# staticcheck from the Go module proxy, pinned; where the proxy cannot be
# reached, vet says so and goes on without it.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK = $(shell $(GO) env GOPATH)/bin/staticcheck

# A compiled file tracked by git (a build of cmd/echo once was) fails the run.
vet: deps
	@bins=$$(git ls-files -z 2>/dev/null | xargs -0 -r sh -c 'for f; do [ -f "$$f" ] && [ "$$(head -c 4 "$$f" | od -An -c | tr -d " ")" = "177ELF" ] && echo "$$f"; done' sh); \
	if [ -n "$$bins" ]; then echo "compiled files are tracked (git rm --cached them): $$bins" >&2; exit 1; fi
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi
	@if [ ! -x $(STATICCHECK) ]; then \
		echo "vet: installing staticcheck $(STATICCHECK_VERSION)"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) || \
		echo "vet: staticcheck could not be installed (no Go module proxy?); skipped" >&2; \
	fi
	@if [ -x $(STATICCHECK) ]; then echo "staticcheck ./..."; $(STATICCHECK) ./...; fi

# The suite runs with GOMAXPROCS=1 and 2 as well as the machine's default
# (the race run): the loop hand-off must hold when the loop thread and its
# callers share one P, and when each has one.
test: vet
	$(GO) test -race -count=1 ./...
	GOMAXPROCS=2 GOEXPERIMENT=cgocheck2 $(GO) test -count=1 ./...
	GOMAXPROCS=1 $(GO) test -count=1 ./...
	$(MAKE) --no-print-directory asan fuzz

# Allocation counts hold for the normal build, which the race and cgocheck2
# runs test; a build with -asan allocates where it does not (one allocation
# more per connection or message in the Allocs tests). -short
# runs a tenth of the soak and a second of each storm: enough for ASan to see
# every path, at a fraction of the cost.
asan: deps
	$(GO) test -asan -short -count=1 -skip 'Allocs$$' ./...

# Counts, not durations: with a -fuzztime duration Go 1.26's fuzz coordinator
# can fail a clean run with "context deadline exceeded" as the time runs out
# (golang/go#75804, fixed in Go 1.27). About 10 s each on this 2-core machine.
FUZZTIME ?= 30000x
FUZZTIME_ASAN ?= 3000x
FUZZ_TARGETS = FuzzNewBind FuzzListenerOptions
# Targets that read C memory run under AddressSanitizer, which reports a read
# past the end that would otherwise go unnoticed.
FUZZ_ASAN_TARGETS = FuzzSockaddrToAddr

# go test -fuzz takes one target at a time; a failing input is written to
# testdata/fuzz/<target>/ and fails the run.
fuzz: deps
	@for f in $(FUZZ_TARGETS); do \
		echo "$(GO) test -run '^$$' -fuzz '^$$f$$' -fuzztime $(FUZZTIME) ."; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done
	@for f in $(FUZZ_ASAN_TARGETS); do \
		echo "$(GO) test -asan -run '^$$' -fuzz '^$$f$$' -fuzztime $(FUZZTIME_ASAN) ."; \
		$(GO) test -asan -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME_ASAN) . || exit 1; \
	done

run: deps
	$(GO) run ./cmd/echo $(ARGS)

bench: deps
	$(MAKE) -C bench
