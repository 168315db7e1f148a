#!/usr/bin/env bash
# The deployment checks of `make test`: buf lint of the gRPC API, the Kubernetes example
# rendered by kustomize from `weft` output and validated against the Kubernetes schemas,
# yamllint, hadolint, the alert rules (promtool check and unit tests), the dashboard's
# PromQL, and promtool's lint of a live scrape of a local devnet. Tools come from scripts/ensure-deploy-tools.sh; a
# check whose tool could not be had is skipped with the reason (and counted below).
#   scripts/deploy-check.sh [weft binary, default target/debug/weft]
set -uo pipefail
cd "$(dirname "$0")/.."
weft=$(realpath "${1:-target/debug/weft}")
bin=$(realpath target/tools/bin)
failed=0
skipped=0
work=$(mktemp -d /tmp/weft-deploy-check.XXXXXX)
devnet_pid=""
cleanup() {
  if [ -n "$devnet_pid" ]; then
    kill -INT "$devnet_pid" 2>/dev/null
    for _ in $(seq 1 40); do
      pgrep -f "weft run --home $work/" >/dev/null || break
      sleep 0.25
    done
    pkill -KILL -f "weft run --home $work/" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

have() {
  if [ -x "$bin/$1" ]; then return 0; fi
  echo "deploy-check: SKIPPED $2: $1 could not be installed (see ensure-deploy-tools above)"
  skipped=$((skipped + 1))
  return 1
}
check() {
  local name=$1
  shift
  if "$@" >"$work/out.txt" 2>&1; then
    echo "deploy-check: ok      $name"
  else
    echo "deploy-check: FAILED  $name"
    cat "$work/out.txt"
    failed=$((failed + 1))
  fi
}

if have buf "buf lint of the weft.v1 API"; then
  check "buf lint proto/ (STANDARD, exceptions in proto/buf.yaml)" sh -c "cd proto && '$bin/buf' lint"
fi
if have yamllint "yamllint of k8s/"; then
  check "yamllint k8s/" "$bin/yamllint" --strict k8s/
fi
if have hadolint "hadolint of k8s/Dockerfile"; then
  check "hadolint k8s/Dockerfile" "$bin/hadolint" k8s/Dockerfile
fi

# The four-validator example exactly as the README has an operator make it: generate.sh
# runs `weft init` and `weft genesis`, kustomize renders, nothing is edited.
cp -r k8s "$work/k8s"
# A copy without any homes `make k8s-example` left in the work tree (generate.sh never
# overwrites keys).
rm -rf "$work"/k8s/examples/*/validator-*/home "$work"/k8s/examples/*/genesis.json
check "generate.sh (weft init x4, weft genesis)" "$work/k8s/examples/four-validators/generate.sh" "$weft"
if have kubectl "kustomize rendering and the checks on it"; then
  check "kubectl kustomize k8s/examples/four-validators" \
    sh -c "'$bin/kubectl' kustomize '$work/k8s/examples/four-validators' > '$work/rendered.yaml'"
  if have kubernetes-validate "schema validation of the rendered objects"; then
    # ServiceMonitor is a CustomResourceDefinition's kind: no schema ships for it (a warning).
    check "kubernetes-validate --strict (rendered objects)" \
      "$bin/kubernetes-validate" --strict --quiet "$work/rendered.yaml"
  fi
  check "rendered objects: one identity per validator, hardening, probes" \
    "$(dirname "$bin")/venv/bin/python" scripts/check_rendered.py "$work/rendered.yaml" "$work/k8s/examples/four-validators"
fi

if have promtool "alert rules and dashboard checks"; then
  check "promtool check rules k8s/monitoring/alerts.yaml" "$bin/promtool" check rules k8s/monitoring/alerts.yaml
  check "promtool test rules k8s/monitoring/alerts_test.yaml" "$bin/promtool" test rules k8s/monitoring/alerts_test.yaml
  # A live scrape: a local devnet, scraped once every validator is connected to the others.
  "$weft" devnet --validators 4 --dir "$work/net" >"$work/devnet.log" 2>&1 &
  devnet_pid=$!
  scraped=0
  for _ in $(seq 1 240); do
    if python3 - "$work/scrape.txt" <<'PY' 2>/dev/null; then scraped=1; break; fi
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:26660/metrics", timeout=2).read().decode()
assert "weft_connected_validators 3" in body.splitlines()
open(sys.argv[1], "w").write(body)
PY
    sleep 0.25
  done
  if [ "$scraped" = 1 ]; then
    check "promtool check metrics (live scrape of validator 0)" \
      sh -c "'$bin/promtool' check metrics < '$work/scrape.txt'"
    check "dashboard PromQL parses; dashboard and alerts read only exported metrics" \
      python3 scripts/check_monitoring.py "$bin/promtool" "$work/scrape.txt"
  else
    echo "deploy-check: FAILED  the devnet never connected within 60 s; its log:"
    tail -n 40 "$work/devnet.log"
    failed=$((failed + 1))
  fi
fi

echo "deploy-check: $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
