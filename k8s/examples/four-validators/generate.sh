#!/usr/bin/env bash
# Creates the four validators' homes (keys, config.toml) and the shared genesis.json with
# `weft`, where this example's kustomization reads them:
#   k8s/examples/four-validators/generate.sh [path to weft, default: weft on PATH]
# Each validator's genesis address is its pod's DNS name in the kustomization's
# namespace, so genesis is the address book and nothing needs editing. It refuses to
# overwrite an existing home (keys are made once). In production each operator runs
# `weft init` on their own side and only the validator.json files travel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
weft=${1:-weft}
chain=${WEFT_CHAIN_ID:-weft-k8s}
namespace=$(awk '$1 == "namespace:" {print $2; exit}' "$here/kustomization.yaml")
entries=()
for i in 0 1 2 3; do
  home="$here/validator-$i/home"
  "$weft" init --home "$home" --index "$i" --chain-id "$chain" \
    --p2p-listen /ip4/0.0.0.0/udp/7000/quic-v1 \
    --p2p-external "/dns4/weft-$i-0.weft.$namespace.svc.cluster.local/udp/7000/quic-v1" \
    --grpc-listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:26660
  entries+=("$home/validator.json")
done
"$weft" genesis --chain-id "$chain" --out "$here/genesis.json" "${entries[@]}"
