#!/usr/bin/env bash
# Renders a complete Weft validator set for Kubernetes on stdout:
#   k8s/render.sh [validators=4] [namespace=weft] [image=weft:0.1.0] [weft=target/release/weft] | kubectl apply -f -
#
# - `weft init` makes each validator's keys and config, `weft genesis` the shared
#   genesis.json (ConfigMap weft-genesis).
# - Validator i gets its own Secret weft-node-<i> (keys and config.toml) and its own
#   one-pod StatefulSet weft-<i> with a PersistentVolumeClaim for RocksDB: a pod mounts
#   only its own keys, and a rescheduled pod keeps its data and signing record.
# - One headless Service (weft) gives every pod a stable DNS name for QUIC (UDP 7000);
#   Service weft-grpc spreads clients over all validators' gRPC (TCP 50051).
# - Pods carry prometheus.io/scrape annotations for /metrics on TCP 26660; readiness is the
#   gRPC health of weft.v1.Ledger (synced and connected to 2f others), liveness the server's.
# The keys exist only in the rendered Secrets: keep the output somewhere safe or apply it
# straight away.
set -euo pipefail
n=${1:-4}
namespace=${2:-weft}
image=${3:-weft:0.1.0}
weft=${4:-target/release/weft}
chain=weft-k8s
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host() { echo "weft-$1-0.weft.$namespace.svc.cluster.local"; }
for i in $(seq 0 $((n - 1))); do
  "$weft" init --home "$work/node$i" --index "$i" --chain-id "$chain" \
    --p2p-listen /ip4/0.0.0.0/udp/7000/quic-v1 \
    --p2p-external "/dns4/$(host "$i")/udp/7000/quic-v1" \
    --grpc-listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:26660 >/dev/null
done
"$weft" genesis --chain-id "$chain" --out "$work/genesis.json" "$work"/node*/validator.json >/dev/null
indent() { sed 's/^/    /' "$1"; }
cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
---
apiVersion: v1
kind: Service
metadata:
  name: weft
  namespace: $namespace
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app.kubernetes.io/name: weft
  ports:
    - {name: p2p, port: 7000, protocol: UDP}
    - {name: grpc, port: 50051, protocol: TCP}
    - {name: metrics, port: 26660, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: weft-grpc
  namespace: $namespace
spec:
  selector:
    app.kubernetes.io/name: weft
  ports:
    - {name: grpc, port: 50051, protocol: TCP}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: weft-genesis
  namespace: $namespace
data:
  genesis.json: |
$(indent "$work/genesis.json")
YAML
for i in $(seq 0 $((n - 1))); do
  b=$([ "$i" = 0 ] && echo 1 || echo 0)
  bootstrap=$(sed -n 's/^ *"p2p_address": "\(.*\)",\{0,1\}$/\1/p' "$work/node$b/validator.json")
  sed -i "s|^bootstrap = \[\]|bootstrap = [\"$bootstrap\"]|" "$work/node$i/config.toml"
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: weft-node-$i
  namespace: $namespace
type: Opaque
data:
  config.toml: $(base64 -w0 "$work/node$i/config.toml")
  validator.key: $(base64 -w0 "$work/node$i/keys/validator.key")
  p2p.key: $(base64 -w0 "$work/node$i/keys/p2p.key")
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: weft-$i
  namespace: $namespace
  labels: {app.kubernetes.io/name: weft, weft.validator: "$i"}
spec:
  serviceName: weft
  replicas: 1
  # Never two pods with one key: a replacement starts only after the old pod is gone.
  podManagementPolicy: OrderedReady
  selector:
    matchLabels: {app.kubernetes.io/name: weft, weft.validator: "$i"}
  template:
    metadata:
      labels: {app.kubernetes.io/name: weft, weft.validator: "$i"}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "26660"
        prometheus.io/path: /metrics
    spec:
      securityContext: {runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001}
      terminationGracePeriodSeconds: 30
      initContainers:
        - name: home
          image: $image
          command: ["/bin/sh", "-c"]
          args:
            - mkdir -p /home/weft/keys && cp /secret/config.toml /config/genesis.json /home/weft/
              && cp /secret/validator.key /secret/p2p.key /home/weft/keys/
              && chmod 0600 /home/weft/keys/* && ln -sfn /data /home/weft/data
          volumeMounts:
            - {name: secret, mountPath: /secret, readOnly: true}
            - {name: genesis, mountPath: /config, readOnly: true}
            - {name: home, mountPath: /home/weft}
      containers:
        - name: weft
          image: $image
          args: ["--log-format", "json", "run", "--home", "/home/weft"]
          env:
            - {name: RUST_LOG, value: info}
          ports:
            - {name: p2p, containerPort: 7000, protocol: UDP}
            - {name: grpc, containerPort: 50051, protocol: TCP}
            - {name: metrics, containerPort: 26660, protocol: TCP}
          readinessProbe:
            grpc: {port: 50051, service: weft.v1.Ledger}
            periodSeconds: 5
          livenessProbe:
            grpc: {port: 50051}
            periodSeconds: 10
            failureThreshold: 6
          resources:
            requests: {cpu: "1", memory: 1Gi}
            limits: {memory: 4Gi}
          volumeMounts:
            - {name: home, mountPath: /home/weft}
            - {name: data, mountPath: /data}
      volumes:
        - name: secret
          secret: {secretName: weft-node-$i, defaultMode: 0400}
        - name: genesis
          configMap: {name: weft-genesis}
        - name: home
          emptyDir: {}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests: {storage: 20Gi}
YAML
done
