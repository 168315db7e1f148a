#!/usr/bin/env python3
"""Checks the monitoring files against promtool and a live scrape of a validator.

  check_monitoring.py PROMTOOL SCRAPE_FILE

- every PromQL expression of the Grafana dashboard parses (promtool check rules, with
  Grafana's variables replaced by values of the same type);
- every weft_* and process_* metric the dashboard or the alert rules read is in the
  scrape, so a renamed metric cannot leave a panel or an alert silently empty.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "k8s/monitoring/dashboard.json"
ALERTS = ROOT / "k8s/monitoring/alerts.yaml"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*"}
OWN_METRIC = re.compile(r"\b((?:weft|process)_[a-z0-9_]+)")


def dashboard_expressions():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def main():
    promtool, scrape = sys.argv[1], pathlib.Path(sys.argv[2]).read_text()
    failures = []
    expressions = list(dashboard_expressions())
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(expressions):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append(f"      - record: dashboard:expr_{index}")
        rules.append(f"        expr: {json.dumps(expr)}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("\n".join(rules) + "\n")
    checked = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    pathlib.Path(f.name).unlink()
    if checked.returncode != 0:
        failures.append("dashboard PromQL does not parse:\n" + checked.stdout + checked.stderr)
    exported = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "histogram":
                exported.update({name + "_bucket", name + "_sum", name + "_count"})
    used = {(title, name) for title, expr in expressions for name in OWN_METRIC.findall(expr)}
    used |= {("alerts.yaml", name) for name in OWN_METRIC.findall(ALERTS.read_text())}
    for where, name in sorted(used):
        if name not in exported:
            failures.append(f"{where}: {name} is not exported by a validator")
    print(f"check_monitoring: {len(expressions)} dashboard expressions, "
          f"{len({n for _, n in used})} metrics read, {len(exported)} exported")
    for failure in failures:
        print("check_monitoring: " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
