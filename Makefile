# Weft: the two commands a fresh Debian machine with the Rust toolchain needs.
#   make test    install what is missing, then fmt check, clippy -D warnings, all tests
#   make devnet  (arrives with the node issue) a local 4-validator network

SHELL := /bin/bash
CARGO ?= cargo
# Crash-test kills; CI and developers can raise it (WEFT_CRASH_KILLS=1000 make test).
export WEFT_CRASH_KILLS ?= 100

.PHONY: test deps fmt-check clippy unit devnet bench

test: deps fmt-check clippy unit

# RocksDB's bindgen needs libclang and clang. Install them only when missing, and only
# as root; otherwise print the exact command.
deps:
	@if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "make: installing clang and libclang-dev for RocksDB's bindgen"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-dev; \
		else \
			echo "make: RocksDB's build needs clang and libclang. Run:"; \
			echo "    sudo apt-get update && sudo apt-get install -y clang libclang-dev"; \
			exit 1; \
		fi; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

fmt-check:
	$(CARGO) fmt --all --check

# clippy and the tests share the dev profile, so RocksDB's C++ is compiled once for both.
clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets --locked

bench:
	$(CARGO) bench -p weft-benches

devnet:
	@echo "make devnet arrives with the node issue (weft devnet); see README.md"; exit 1
