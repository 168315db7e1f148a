#!/usr/bin/env python3
"""Checks the rendered Kubernetes example (kubectl kustomize output) for what the schema
cannot: one identity per validator, the hardening, the probes and the budget.

  check_rendered.py RENDERED_YAML EXAMPLE_DIR

EXAMPLE_DIR holds the validator-<i>/home folders generate.sh made; each validator's
Secret must carry exactly that validator's keys.
"""
import base64
import collections
import json
import pathlib
import sys

import yaml


def run_init_twice(pod, expect):
    """Runs the init container's script as the pod's user, the way the kubelet lays the
    volumes out (Secret files 0440 root:fsGroup, a claim root owned by the fsGroup), on
    one home volume three times in a row (pods restart): each run must succeed and leave
    the keys mode 0600, and the signing marker appears only when asked for."""
    import os
    import shutil
    import subprocess
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        print("check_rendered: SKIPPED the init container run (needs root and setpriv)")
        return
    init = pod["initContainers"][0]
    script = init["args"][0]
    uid = pod["securityContext"]["runAsUser"]
    gid = pod["securityContext"]["fsGroup"]
    root = tempfile.mkdtemp()
    os.chmod(root, 0o755)
    try:
        paths = {name: os.path.join(root, name) for name in ["secret", "config", "home", "data"]}
        for path in paths.values():
            os.mkdir(path)
        for name in ["config.toml", "validator.key", "p2p.key"]:
            with open(os.path.join(paths["secret"], name), "w") as f:
                f.write("x\n")
            os.chown(os.path.join(paths["secret"], name), 0, gid)
            os.chmod(os.path.join(paths["secret"], name), 0o440)
        with open(os.path.join(paths["config"], "genesis.json"), "w") as f:
            f.write("{}\n")
        os.chmod(os.path.join(paths["config"], "genesis.json"), 0o644)
        for name in ["home", "data"]:
            os.chown(paths[name], 0, gid)
            os.chmod(paths[name], 0o2775)
        local = (script.replace("/home/weft/data", "@HOME_DATA@")
                 .replace("/data", paths["data"]).replace("@HOME_DATA@", paths["home"] + "/data")
                 .replace("/secret/", paths["secret"] + "/").replace("/config/", paths["config"] + "/")
                 .replace("/home/weft", paths["home"]))
        keys = os.path.join(paths["home"], "keys")
        for signed in ["false", "false", "true"]:
            env = {"PATH": os.environ["PATH"], "WEFT_KEY_HAS_SIGNED": signed}
            run = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                                  "/bin/sh", "-c", local], env=env, capture_output=True, text=True)
            expect(run.returncode == 0, f"init container (WEFT_KEY_HAS_SIGNED={signed}) failed "
                                        f"on a used home volume: {run.stderr.strip()}")
            if run.returncode != 0:
                return
            for name in ["validator.key", "p2p.key"]:
                mode = os.stat(os.path.join(keys, name)).st_mode & 0o777
                expect(mode == 0o600, f"init container leaves {name} mode {mode:o}")
            marker = os.path.exists(os.path.join(keys, "validator.started"))
            expect(marker == (signed == "true"), f"marker {marker} with WEFT_KEY_HAS_SIGNED={signed}")
    finally:
        shutil.rmtree(root)


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    example = pathlib.Path(sys.argv[2])
    failures = []

    def expect(condition, message):
        if not condition:
            failures.append(message)

    kinds = collections.Counter(d["kind"] for d in docs)
    print("rendered:", ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
    for kind, count in {"StatefulSet": 4, "Secret": 4, "ConfigMap": 1, "Service": 2,
                        "PodDisruptionBudget": 1, "NetworkPolicy": 1, "ServiceMonitor": 1,
                        "Namespace": 1}.items():
        expect(kinds[kind] == count, f"{count} {kind} expected, {kinds[kind]} rendered")
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    genesis = next(d for d in docs if d["kind"] == "ConfigMap")
    validators = json.loads(genesis["data"]["genesis.json"])["validators"]
    for d in docs:
        expect(d["metadata"].get("namespace", "weft") == "weft" or d["kind"] == "Namespace",
               f"{d['kind']} {d['metadata']['name']} outside namespace weft")
    used_secrets = set()
    for i in range(4):
        sts = by_name.get(("StatefulSet", f"weft-{i}"))
        if sts is None:
            failures.append(f"StatefulSet weft-{i} missing")
            continue
        spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
        expect(spec["replicas"] == 1, f"weft-{i}: one pod per key")
        expect(spec.get("updateStrategy", {}).get("type") == "OnDelete",
               f"weft-{i}: pods replaced only when deleted (never all at once)")
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        expect(claims == {"home", "data"},
               f"weft-{i}: home (keys and the signing marker) and data on their own volumes")
        expect(spec["selector"]["matchLabels"].get("weft.io/validator") == str(i),
               f"weft-{i}: selector names validator {i}")
        secret_names = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        expect(len(secret_names) == 1 and secret_names[0].startswith(f"weft-node-{i}-"),
               f"weft-{i} mounts {secret_names}, not its own Secret only")
        used_secrets.update(secret_names)
        for name in secret_names:
            data = secrets[name]["data"]
            home = example / f"validator-{i}" / "home"
            for key, path in [("validator.key", "keys/validator.key"), ("p2p.key", "keys/p2p.key"),
                              ("config.toml", "config.toml")]:
                expect(base64.b64decode(data[key]) == (home / path).read_bytes(),
                       f"Secret {name}: {key} is not validator {i}'s")
        security = pod["securityContext"]
        expect(security.get("runAsNonRoot") is True, f"weft-{i}: runAsNonRoot")
        expect(security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
               f"weft-{i}: seccomp RuntimeDefault")
        expect(pod.get("automountServiceAccountToken") is False, f"weft-{i}: no API token")
        for container in pod["containers"] + pod["initContainers"]:
            name = f"weft-{i}/{container['name']}"
            sc = container.get("securityContext", {})
            expect(sc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{name}: no privilege escalation")
            expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: drops ALL")
            resources = container.get("resources", {})
            expect({"cpu", "memory"} <= set(resources.get("requests", {}))
                   and {"cpu", "memory"} <= set(resources.get("limits", {})),
                   f"{name}: requests and limits")
        if i == 0:
            run_init_twice(pod, expect)
        weft = next(c for c in pod["containers"] if c["name"] == "weft")
        mounts = {m["mountPath"]: m["name"] for m in weft["volumeMounts"]}
        expect(mounts.get("/home/weft") == "home" and mounts.get("/data") == "data",
               f"weft-{i}: home and data mounted from their claims, not from ephemeral storage")
        expect(weft["readinessProbe"]["grpc"].get("service") == "weft.v1.Ledger",
               f"weft-{i}: readiness is weft.v1.Ledger's health")
        expect("service" not in weft["livenessProbe"]["grpc"], f"weft-{i}: liveness is the server's")
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        expect(anti["topologyKey"] == "kubernetes.io/hostname"
               and anti["labelSelector"] == {"matchExpressions": [
                   {"key": "app.kubernetes.io/name", "operator": "In", "values": ["weft"]}]},
               f"weft-{i}: anti-affinity against every validator pod, across nodes")
        address = validators[i]["p2p_address"]
        expect(address.startswith(f"/dns4/weft-{i}-0.weft.weft.svc.cluster.local/udp/7000/quic-v1/p2p/"),
               f"genesis address of validator {i} is {address}")
    expect(used_secrets == set(secrets), f"Secrets no pod mounts: {set(secrets) - used_secrets}")
    pdb = by_name[("PodDisruptionBudget", "weft")]["spec"]
    expect(pdb.get("maxUnavailable") == 1, "the budget allows f = 1 validator down")
    peers = by_name[("Service", "weft")]["spec"]
    expect(peers.get("clusterIP") == "None" and peers.get("publishNotReadyAddresses") is True,
           "headless Service publishing not-ready addresses")
    policy = by_name[("NetworkPolicy", "weft")]["spec"]
    quic = [r for r in policy["ingress"] if any(p["port"] == 7000 for p in r["ports"])]
    expect(len(quic) == 1 and quic[0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "weft"}}}],
        "QUIC admitted only from validator pods")
    for failure in failures:
        print("check_rendered:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
