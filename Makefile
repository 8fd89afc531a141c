# walbuf: the commands a developer and CI run. `make help` lists them.
# Recipes use only cargo (rustup stable) and, when installed, cargo-nextest.

CARGO ?= cargo
# Extra arguments for `make run` / `make bench`, e.g. `make run ARGS=--quick`.
ARGS ?=
# `make crash`: process-kill trials to run.
TRIALS ?= 200
# `make fuzz`: target and duration. `make fuzz-ci`: every target, FUZZ_CI_SECONDS each.
TARGET ?= decode_record
SECONDS ?= 60
FUZZ_TARGETS = decode_record scan_segment store_ops
FUZZ_CI_SECONDS = 60

.PHONY: help run test test-targets test-doc lint fmt-check clippy doc bench bench-compare crash fuzz fuzz-ci

help:
	@echo "make run     walbuf demo: a concurrent shape workload, then a SIGKILLed one and its recovery (ARGS=--quick for a short run)"
	@echo "make test    the whole test suite (what .ci/run runs after lint)"
	@echo "make lint    rustfmt --check, clippy -D warnings, rustdoc -D warnings (each alone: fmt-check, clippy, doc)"
	@echo "make bench   walbuf bench (release build)"
	@echo "make bench-compare  the engines group: walbuf against fjall, redb, SQLite (builds with --features compare; ARGS=--quick)"
	@echo "make crash   long process-kill runs: TRIALS=N trials of 5 SIGKILLs (default 200)"
	@echo "make fuzz    one cargo-fuzz target, no sanitizer: TARGET=name (decode_record, scan_segment, store_ops) SECONDS=n"
	@echo "make fuzz-ci every fuzz target for $(FUZZ_CI_SECONDS) s (what .ci/run runs after test)"

run:
	$(CARGO) run --release -p walbuf-cli -- demo $(ARGS)

# nextest runs every target's tests in parallel processes but skips doctests: run those too.
# `make -k test` runs the doctests even when a test failed.
test: test-targets test-doc

test-targets:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --all-targets --no-fail-fast"; \
		$(CARGO) nextest run --workspace --all-targets --no-fail-fast; \
	else \
		echo "cargo-nextest not found: using cargo test"; \
		echo "$(CARGO) test --workspace --all-targets --no-fail-fast"; \
		$(CARGO) test --workspace --all-targets --no-fail-fast; \
	fi

test-doc:
	$(CARGO) test --workspace --doc

# `make -k lint` runs all three checks even when one fails.
lint: fmt-check clippy doc

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

bench:
	$(CARGO) run --release -p walbuf-cli -- bench $(ARGS)

# The comparison engines (fjall, redb) build only with the `compare` feature.
bench-compare:
	$(CARGO) run --release -p walbuf-cli --features compare -- bench --filter engines $(ARGS)

# Long process-kill runs: TRIALS trials of 5 SIGKILLs each (make test runs 10).
crash:
	WALBUF_CRASH_TRIALS=$(TRIALS) $(CARGO) test --release -p walbuf-tests --test crash_kill -- --nocapture

# cargo-fuzz targets (fuzz/, its own workspace) without a sanitizer, so on stable. fuzz/run
# installs cargo-fuzz if missing, seeds a temporary corpus from fuzz/seeds/ and
# fuzz/regressions/, and on a crash prints the command that reproduces it (docs/testing.md).
# `CORPUS=DIR make fuzz ...` keeps the corpus in DIR/<target>.
fuzz:
	fuzz/run $(SECONDS) $(TARGET)

fuzz-ci:
	fuzz/run $(FUZZ_CI_SECONDS) $(FUZZ_TARGETS)
