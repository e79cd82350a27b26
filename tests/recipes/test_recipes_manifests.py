"""The recipes in docs/recipes: manifests, Prometheus config and rules, Grafana JSON, commands.

Nothing here needs a cluster or a Prometheus server: Kubernetes manifests are
checked field by field against the official client's API models, PromQL and
Grafana queries against the names the exporter really exposes, and every
``spikewatch`` command line in the recipes against the real click commands.
``promtool`` (Debian's prometheus package) checks config and rules when present.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from spikewatch.sampler.prometheus import (
    CLI_ALLOW_REMOTE,
    CLI_OPTION,
    DETAIL_SERIES,
    exposed_names,
)

from tests.conftest import ROOT

RECIPES = ROOT / "docs" / "recipes"
K8S = RECIPES / "kubernetes"
PROM = RECIPES / "prometheus"
GRAFANA = RECIPES / "grafana"
PROMTOOL = shutil.which("promtool")
KNOWN_SERIES = {"rss", "cg_usage", *DETAIL_SERIES}
# Metrics from elsewhere that the recipes put next to spikewatch's (cAdvisor, Prometheus).
FOREIGN_METRICS = {"container_memory_working_set_bytes", "up", "ALERTS"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in load_all(path)}


# --------------------------------------------------------------- every file


def test_every_yaml_parses_and_every_json_too() -> None:
    yamls = sorted(RECIPES.rglob("*.yml")) + sorted(RECIPES.rglob("*.yaml"))
    assert len(yamls) >= 5, yamls
    for path in yamls:
        docs = load_all(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path
    jsons = sorted(RECIPES.rglob("*.json"))
    assert jsons
    for path in jsons:
        json.loads(path.read_text())


# --------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s_schema():  # type: ignore[no-untyped-def]
    pytest.importorskip("kubernetes", reason="pip install kubernetes (the test extra)")
    from tests.recipes import k8s_schema as mod

    return mod


@pytest.mark.parametrize("name", ["sidecar-pod.yaml", "recorder-job.yaml"])
def test_manifests_match_the_kubernetes_api_models(name: str, k8s_schema) -> None:  # type: ignore[no-untyped-def]
    for doc in load_all(K8S / name):
        k8s_schema.validate(doc)  # unknown fields, wrong types, missing required fields


def test_the_schema_check_catches_misspelt_fields(k8s_schema) -> None:  # type: ignore[no-untyped-def]
    pod = by_kind(K8S / "sidecar-pod.yaml")["Pod"]
    bad = json.loads(json.dumps(pod).replace('"shareProcessNamespace"', '"shareProcesNamespace"'))
    with pytest.raises(AssertionError, match="shareProcesNamespace"):
        k8s_schema.validate(bad)


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_sidecar_pod_is_plausible() -> None:
    docs = by_kind(K8S / "sidecar-pod.yaml")
    pod, svc, netpol = docs["Pod"], docs["Service"], docs["NetworkPolicy"]
    spec = pod["spec"]
    assert spec["shareProcessNamespace"] is True
    names = [c["name"] for c in spec["containers"]]
    assert names == ["app", "spikewatch"]
    for c in spec["containers"]:
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"pin a tag: {image}"
        assert "memory" in c["resources"]["limits"], f"{c['name']} needs a memory limit"

    side = _container(pod, "spikewatch")
    sc = side["securityContext"]
    assert "SYS_PTRACE" in sc["capabilities"]["add"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["allowPrivilegeEscalation"] is False
    res = side["resources"]
    assert set(res["requests"]) == {"cpu", "memory"}
    assert "cpu" not in res["limits"], "a CPU limit throttles the sampling loop"

    # The sidecar samples the app container's cgroup, which spikewatch finds itself.
    mounts = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert side["command"] == ["spikewatch"] and side["args"][0] == "sample"
    assert side["args"][side["args"].index("--cgroup") + 1] == "auto"
    assert "--match" in side["args"] or "--pid" in side["args"]
    assert set(mounts) <= set(volumes)

    # Prometheus finds /metrics where the sampler serves it.
    args = side["args"]
    bind = args[args.index(CLI_OPTION) + 1]
    port = int(bind.rsplit(":", 1)[1])
    assert CLI_ALLOW_REMOTE in args, "a pod IP is not loopback: the bind must be allowed explicitly"
    ports = {p["name"]: p["containerPort"] for p in side["ports"]}
    assert ports["spikewatch-prom"] == port
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"
    journal = args[args.index("--journal") + 1]
    assert journal.startswith(mounts["journal"] + "/")

    # The Service selects this pod and targets its named ports; the policy admits 9464.
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    all_ports = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= all_ports
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert all(labels.get(k) == v for k, v in netpol["spec"]["podSelector"]["matchLabels"].items())
    allowed = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule.get("ports", [])}
    assert {port, 7781, 8080} <= allowed


def test_recorder_job_is_plausible() -> None:
    pod_docs = by_kind(K8S / "sidecar-pod.yaml")
    docs = by_kind(K8S / "recorder-job.yaml")
    job, pvc = docs["Job"], docs["PersistentVolumeClaim"]
    tpl = job["spec"]["template"]
    assert tpl["spec"]["restartPolicy"] in ("Never", "OnFailure")
    record = tpl["spec"]["initContainers"][0]
    report = tpl["spec"]["containers"][0]
    assert record["args"][0] == "record" and report["args"][0] == "report"
    # It subscribes to the sampler's Service on its stream port...
    svc = pod_docs["Service"]
    endpoint = record["args"][1]
    m = re.match(r"^tcp://([^:]+):(\d+)$", endpoint)
    assert m and m.group(1) == svc["metadata"]["name"]
    assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}
    # ...which the sampler's NetworkPolicy admits for the Job's pods.
    netpol = pod_docs["NetworkPolicy"]
    job_labels = tpl["metadata"]["labels"]
    admitted = [
        rule
        for rule in netpol["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "podSelector" in peer and all(job_labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
    ]
    assert admitted and int(m.group(2)) in {p["port"] for p in admitted[0]["ports"]}
    # The report reads what the recorder wrote, on the claimed volume.
    out = record["args"][record["args"].index("-o") + 1]
    assert report["args"][1] == out
    vols = {v["name"]: v for v in tpl["spec"]["volumes"]}
    assert vols["recordings"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    for c in (record, report):
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"]
        assert any(out.startswith(vm["mountPath"] + "/") for vm in c["volumeMounts"])


def test_dockerfile_installs_what_the_recipes_run() -> None:
    text = (K8S / "Dockerfile").read_text()
    assert re.search(r"pip install .*\.\[[^\]]*prometheus", text)
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


# ---------------------------------------------------------- command lines


def _sample_argv(pod: dict[str, Any]) -> list[str]:
    return list(_container(pod, "spikewatch")["args"])


def recipe_command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, argv after 'spikewatch') for every spikewatch invocation in the recipes."""
    pod = by_kind(K8S / "sidecar-pod.yaml")["Pod"]
    yield "sidecar-pod.yaml", _sample_argv(pod)
    job = by_kind(K8S / "recorder-job.yaml")["Job"]["spec"]["template"]["spec"]
    for c in job["initContainers"] + job["containers"]:
        yield f"recorder-job.yaml:{c['name']}", list(c["args"])
    for md in [ROOT / "docs" / "monitoring.md", *sorted(RECIPES.glob("*.md"))]:
        in_code = False
        text = re.sub(r"\\\n\s*", " ", md.read_text())  # join shell line continuations
        for n, line in enumerate(text.splitlines(), 1):
            if line.startswith("```"):
                in_code = not in_code
                continue
            line = line.strip()
            for m in re.finditer(r"(?:^|[;&|(]\s*|do\s+)spikewatch ([a-z]+[^;&|#)]*)", line) if in_code else []:
                argv = shlex.split(m.group(1).replace("\\", ""), posix=True)
                yield f"{md.name}:{n}", argv


def _option_names(command: Any) -> set[str]:
    names = set()
    for p in command.params:
        names.update(getattr(p, "opts", []))
        names.update(getattr(p, "secondary_opts", []))
    return names


def test_every_spikewatch_command_line_in_the_recipes_exists() -> None:
    import click

    from spikewatch.cli import COMMANDS, main

    ctx = click.Context(main)
    checked = 0
    pending: list[str] = []
    lines = list(recipe_command_lines())
    assert len(lines) >= 10
    for where, argv in lines:
        name = argv[0]
        assert name in COMMANDS, f"{where}: no command 'spikewatch {name}'"
        command = main.get_command(ctx, name)
        if command is None or (command.help or "").startswith("(not built"):
            pending.append(f"{where}: spikewatch {name} (not built yet)")
            continue
        opts = _option_names(command)
        for token in argv[1:]:
            if token == "--":
                break
            if not token.startswith("-") or token == "-":
                continue
            opt = token.split("=", 1)[0]
            assert opt in opts, f"{where}: 'spikewatch {name}' has no option {opt}"
        checked += 1
    assert checked >= 5, pending
    if pending:
        print("not checked yet:", *pending, sep="\n  ")


# ------------------------------------------------------ Prometheus and PromQL


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "spikewatch-rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _grafana_exprs() -> list[str]:
    dash = json.loads((GRAFANA / "spikewatch-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    return exprs


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
    return set(re.findall(r"\b(?:spikewatch_[a-z0-9_]+|container_[a-z0-9_]+)\b", expr))


def test_promql_uses_only_metrics_the_exporter_exposes() -> None:
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    exprs = [r["expr"] for r in rules] + _grafana_exprs()
    test_doc = yaml.safe_load((PROM / "spikewatch-rules.test.yml").read_text())
    exprs += [s["series"] for t in test_doc["tests"] for s in t["input_series"]]
    exposed = exposed_names()
    used: set[str] = set()
    for expr in exprs:
        for name in _metric_names(expr):
            used.add(name)
            assert name in exposed or name in FOREIGN_METRICS, f"{name} is not exposed (in {expr!r})"
        for rec in re.findall(r"\bspikewatch:[a-z0-9_:]+", expr):
            assert rec in recorded, f"recording rule {rec} is used but not defined"
        for series in re.findall(r'series="([^"]+)"', expr):
            assert series in KNOWN_SERIES, f"no series {series!r} in {expr!r}"
    assert {
        "spikewatch_memory_peak_bytes",
        "spikewatch_memory_limit_bytes",
        "spikewatch_oom_kills_total",
        "container_memory_working_set_bytes",
    } <= used


def test_rules_come_after_the_recording_rules_they_use() -> None:
    """Across groups the evaluation order is undefined: an alert could lag its recording rule."""
    doc = yaml.safe_load((PROM / "spikewatch-rules.yml").read_text())
    for group in doc["groups"]:
        seen: set[str] = set()
        for rule in group["rules"]:
            for rec in re.findall(r"\bspikewatch:[a-z0-9_:]+", rule["expr"]):
                assert rec in seen, f"{rule.get('alert') or rule.get('record')} uses {rec} before it is recorded"
            if "record" in rule:
                seen.add(rule["record"])


def test_alert_compares_the_peak_with_the_limit() -> None:
    rules = {r.get("alert") or r.get("record"): r for r in _rules()}
    ratio = rules["spikewatch:limit_used_ratio:peak"]["expr"]
    assert "spikewatch_memory_peak_bytes" in ratio and "spikewatch_memory_limit_bytes" in ratio
    alert = rules["SpikewatchPeakNearLimit"]
    assert re.search(r"spikewatch:limit_used_ratio:peak\s*>\s*0\.9\b", alert["expr"])
    assert "for" not in alert, "a 'for' clause would need the spike to last several scrapes"


def test_scrape_configs_identify_the_scraper() -> None:
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        cfg = yaml.safe_load((PROM / name).read_text())
        for job in cfg["scrape_configs"]:
            assert job["params"]["scraper"], f"{name}:{job['job_name']} should name its scraper"
            assert job.get("metrics_path", "/metrics") == "/metrics"


def test_kubernetes_relabelling_points_at_the_annotated_port() -> None:
    cfg = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
    job = cfg["scrape_configs"][0]
    rule = next(r for r in job["relabel_configs"] if r.get("target_label") == "__address__")
    # Prometheus joins source labels with ';' and anchors the regex; RE2 and Python agree here.
    m = re.fullmatch(rule["regex"], "10.1.2.3:8080;9464")
    assert m and m.expand(rule["replacement"].replace("$", "\\")) == "10.1.2.3:9464"
    m = re.fullmatch(rule["regex"], "10.1.2.3;9464")
    assert m and m.expand(rule["replacement"].replace("$", "\\")) == "10.1.2.3:9464"
    pod = by_kind(K8S / "sidecar-pod.yaml")["Pod"]
    keep = next(
        r for r in job["relabel_configs"] if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]
    )
    assert any(re.fullmatch(keep["regex"], p["name"]) for p in _container(pod, "spikewatch")["ports"])


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool (apt-get install prometheus)")
def test_promtool_accepts_config_and_rules(tmp_path: Path) -> None:
    def promtool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=PROM)

    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "spikewatch-rules.yml"),
        ("test", "rules", "spikewatch-rules.test.yml"),
    ):
        out = promtool(*args)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    out = promtool("check", "config", "prometheus-kubernetes.yml")
    if out.returncode != 0:
        # Debian's build leaves out the Kubernetes service discovery; anything else is a real error.
        assert "kubernetes_sd_configs not found" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="no promtool (apt-get install prometheus)")
def test_promtool_rule_tests_can_fail(tmp_path: Path) -> None:
    """The rule unit test is real: with the threshold raised to 95 % the alert must not fire."""
    rules = (PROM / "spikewatch-rules.yml").read_text().replace("> 0.9", "> 0.95")
    (tmp_path / "spikewatch-rules.yml").write_text(rules)
    shutil.copy(PROM / "spikewatch-rules.test.yml", tmp_path)
    out = subprocess.run(
        [PROMTOOL, "test", "rules", "spikewatch-rules.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "SpikewatchPeakNearLimit" in out.stdout + out.stderr


# ------------------------------------------------------------------ Grafana


def test_grafana_panel_plots_the_peak_next_to_the_working_set_and_limit() -> None:
    dash = json.loads((GRAFANA / "spikewatch-dashboard.json").read_text())
    panel = json.loads((GRAFANA / "spikewatch-panel.json").read_text())
    assert dash["panels"][0] == panel, "spikewatch-panel.json is the dashboard's panel"
    assert panel["type"] == "timeseries"
    assert panel["fieldConfig"]["defaults"]["unit"] == "bytes"
    targets = panel["targets"]
    assert len({t["refId"] for t in targets}) == len(targets)
    exprs = " ".join(t["expr"] for t in targets)
    for name in ("spikewatch_memory_peak_bytes", "container_memory_working_set_bytes", "spikewatch_memory_limit_bytes"):
        assert name in exprs
    peak = next(t["expr"] for t in targets if "spikewatch_memory_peak_bytes" in t["expr"])
    # Zoomed out, each point must be the max of its step, never a point sample or an average.
    assert re.search(r"max_over_time\(spikewatch_memory_peak_bytes\{[^}]*\}\[\$__interval\]\)", peak)
    assert "avg" not in exprs
    variables = {v["name"] for v in dash["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(panel)))
    assert used - {"__interval"} <= variables
    refs = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
    assert refs <= {t["refId"] for t in targets}


# ------------------------------------------------------ CI baseline (compare)


def _yaml_blocks(md: Path) -> list[Any]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", md.read_text(), re.S)]


def test_ci_baseline_pipelines_parse_and_keep_what_compare_reads() -> None:
    github, gitlab = _yaml_blocks(RECIPES / "ci-baseline.md")
    steps = github["jobs"]["memory"]["steps"]
    upload = next(s for s in steps if s.get("name") == "Keep as the baseline (main)")
    assert upload["with"]["name"] == "spikewatch-baseline"
    # what `spikewatch run --out run` writes, and what compare needs to overlay the baseline
    assert set(upload["with"]["path"].split()) == {"run/report.json", "run/recording"}
    fetch = next(s for s in steps if s.get("name") == "Fetch main's baseline")
    assert "--name spikewatch-baseline --dir baseline" in fetch["run"]
    gate = next(s for s in steps if s.get("name") == "Compare and gate")["run"]
    assert "spikewatch compare baseline/report.json run/report.json --md comment.md" in gate
    assert "exit $status" in gate and "--body-file comment.md" in gate
    assert github["permissions"]["pull-requests"] == "write"
    job = gitlab["memory"]
    script = "\n".join(job["script"])
    assert "raw/run/report.json?job=memory" in script and "run/report.json" in job["artifacts"]["paths"]
    assert "--fail-on 'peak>+10%'" in script and "exit $status" in script
    from spikewatch.analysis import failon

    for text in re.findall(r"--fail-on '([^']+)'", (RECIPES / "ci-baseline.md").read_text()):
        failon.parse(text)  # every gate the recipe shows is valid
    rows = [line for line in (RECIPES / "ci-baseline.md").read_text().splitlines() if line.startswith("| `")]
    gates = [g for line in rows for g in re.findall(r"`([a-z][a-z0-9_.#-]*(?:[<>]=?|[!=]=)[^`]+)`", line)]
    assert len(gates) >= 10
    for text in gates:
        failon.parse(text)
