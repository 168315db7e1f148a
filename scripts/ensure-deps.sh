#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build Weft: clang and libclang-dev, which
# RocksDB's bindgen needs. Installs only when missing and only as root; otherwise prints
# the exact command and fails. protoc is not needed from the system (it comes from a crate).
set -euo pipefail

missing=()
for package in clang libclang-dev; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "ensure-deps: installing ${missing[*]} (RocksDB's bindgen needs them)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "ensure-deps: RocksDB's build needs ${missing[*]}. Run:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        echo "ensure-deps: adding the $component toolchain component"
        rustup component add "$component"
    fi
done

# cargo-deny checks licenses, bans and sources in `make test` (deny.toml).
if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "ensure-deps: installing cargo-deny from crates.io (a few minutes, once)"
    cargo install cargo-deny --locked --quiet
fi
