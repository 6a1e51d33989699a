"""The Helm chart in charts/headroom: lint, Kubernetes schema validation of the rendered
manifests, the rules and dashboards equal to the repository's files, every rendered
exporter config (and TLS web config) accepted by the real exporter binary, the rendered
probes and TLS scrape settings tried against a real exporter, and the toggles. Offline:
helm only renders (`helm template`), nothing talks to a cluster."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
import yaml

from conftest import BIN_DIR, ROOT, RULE_FILES, aws_env, free_port, promtool, terminate, wait_until
from exporters import EXPORTERS as WORKSPACE_EXPORTERS, Exporter
from tlsutil import CertificateAuthority, tls_get

HELM = ROOT / ".test-tools" / "bin" / "helm"
CHART = ROOT / "charts" / "headroom"
MULTI = CHART / "ci" / "multi-account-values.yaml"
TLS = CHART / "ci" / "tls-values.yaml"  # mutual TLS
VALUES_FILES = {"default": None, "multi-account": MULTI, "tls": TLS}
ALERTS = ROOT / "alerts"
DASHBOARDS = ROOT / "dashboards"
# Every exporter of the workspace (tests/exporters.py) by its chart key, the crate's
# directory name: its binary and default port come from the crate and the built binary.
EXPORTERS: dict[str, Exporter] = {e.short: e for e in WORKSPACE_EXPORTERS}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.25.0", "1.37.0")
NAMESPACE = "monitoring"
RELEASE = "headroom"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run scripts/setup.sh")
    home = ROOT / ".test-tools" / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    r = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


@functools.lru_cache(maxsize=None)
def _render(values: Path | None, sets: tuple[str, ...], release: str) -> str:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE]
    if values:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    return helm(*args).stdout


def render_text(values: Path | None = None, *sets: str, release: str = RELEASE) -> str:
    return _render(values, tuple(sets), release)


def render(values: Path | None = None, *sets: str, release: str = RELEASE) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(values, *sets, release=release)) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: found {len(found)} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def values_of(values: Path | None) -> dict:
    return yaml.safe_load(values.read_text()) if values else {}


def fullname(values: Path | None) -> str:
    return values_of(values).get("fullnameOverride") or f"{RELEASE}"


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def containers(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], c) for d in find(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


# ---------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_helm_lint_strict(values: Path | None):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    r = helm(*args)
    assert "0 chart(s) failed" in r.stdout and "[WARNING]" not in r.stdout and "[ERROR]" not in r.stdout, r.stdout


# ----------------------------------------------------------------- schema validation


def kubernetes_validate(docs: list[dict], tmp_path: Path, versions: tuple[str, ...] = K8S_VERSIONS) -> subprocess.CompletedProcess:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    binary = Path(sys.executable).parent / "kubernetes-validate"
    assert binary.exists(), f"{binary} is missing: run scripts/setup.sh"
    args = [str(binary), "--strict", "--quiet"]
    for v in versions:
        args += ["-k", v]
    return subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_rendered_manifests_validate_strictly(values: Path | None, tmp_path: Path):
    docs = render(values)
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    # Every kind but the Prometheus Operator's has a bundled schema; a missing schema is
    # only a warning in kubernetes-validate, so a warning fails here too.
    assert {d["kind"] for d in core} >= {"ServiceAccount", "ConfigMap", "Service", "Deployment"}
    assert {d["apiVersion"] for d in docs if d["kind"] in CRD_KINDS} == {"monitoring.coreos.com/v1"}
    r = kubernetes_validate(core, tmp_path)
    assert r.returncode == 0 and "WARN" not in r.stdout and "ERROR" not in r.stdout, r.stdout + r.stderr
    if values == MULTI:
        assert find(docs, "PodDisruptionBudget"), "the multi-account values run two replicas"


def test_strict_validation_catches_a_misspelt_field(tmp_path: Path):
    """The validation above can fail: an unknown field in a container is an error."""
    docs = [d for d in render() if d["kind"] == "Deployment"]
    docs[0]["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    r = kubernetes_validate(docs, tmp_path)
    assert r.returncode != 0 and "securityContex" in r.stdout, r.stdout


# -------------------------------------------------- ServiceMonitors and Services (CRDs)

SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel"}
ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings", "scheme", "tlsConfig"}


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_service_monitors_scrape_each_exporter(values: Path | None):
    docs = render(values)
    services = find(docs, "Service")
    monitors = find(docs, "ServiceMonitor")
    assert len(monitors) == len(EXPORTERS) == len(services)
    extra = values_of(values).get("serviceMonitor", {}).get("additionalLabels", {})
    for sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(sm["spec"]) <= SERVICE_MONITOR_SPEC, sm["spec"]
        assert sm["metadata"]["namespace"] == NAMESPACE
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert extra.items() <= sm["metadata"]["labels"].items()
        # It selects exactly its own Service, by a port that Service has.
        chosen = [s for s in services if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in chosen] == [sm["metadata"]["name"]]
        [endpoint] = sm["spec"]["endpoints"]
        assert set(endpoint) <= ENDPOINT_KEYS, endpoint
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]}
        if "interval" in values_of(values).get("serviceMonitor", {}):
            assert endpoint["interval"] == values_of(values)["serviceMonitor"]["interval"]
        if values == TLS:
            assert endpoint["scheme"] == "https"
            assert endpoint["tlsConfig"] == {
                "serverName": f"{sm['metadata']['name']}.{NAMESPACE}.svc",
                "ca": {"secret": {"name": "headroom-tls", "key": "ca.crt"}},
                "cert": {"secret": {"name": "prometheus-client-tls", "key": "tls.crt"}},
                "keySecret": {"name": "prometheus-client-tls", "key": "tls.key"},
            }
        else:
            assert "scheme" not in endpoint and "tlsConfig" not in endpoint


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_services_reach_their_exporter_only(values: Path | None):
    docs = render(values)
    deployments = find(docs, "Deployment")
    for name in EXPORTERS:
        svc = one(docs, "Service", f"{fullname(values)}-{name}")
        chosen = [d for d in deployments if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert [d["metadata"]["name"] for d in chosen] == [svc["metadata"]["name"]]
        [port] = svc["spec"]["ports"]
        [container] = chosen[0]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["port"] == ports[port["targetPort"]] == EXPORTERS[name].default_port
        # The Deployment's own selector picks its pods.
        assert selects(chosen[0]["spec"]["selector"]["matchLabels"], chosen[0]["spec"]["template"]["metadata"]["labels"])


# --------------------------------------------------------- rules and dashboards: no drift


def test_prometheus_rule_is_the_rule_file_and_passes_promtool(tmp_path: Path):
    [rule] = find(render(), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    expected = [g for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]]
    assert expected and rule["spec"]["groups"] == expected
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    # Every rule of the file arrived, the unit tests' file did not.
    assert f"SUCCESS: {sum(len(g['rules']) for g in expected)} rules found" in r.stdout, r.stdout


def test_prometheus_rule_labels_and_toggle():
    [rule] = find(render(MULTI), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert find(render(None, "prometheusRule.enabled=false"), "PrometheusRule") == []


def test_dashboards_configmap_holds_exactly_the_dashboards():
    files = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    assert len(files) >= 3
    cm = one(render(), "ConfigMap", f"{RELEASE}-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == set(files)
    for name, text in files.items():
        assert json.loads(cm["data"][name]) == json.loads(text), name
        assert cm["data"][name].rstrip("\n") == text.rstrip("\n"), f"{name} is not byte for byte the file"


def test_dashboards_label_annotations_and_toggle():
    cm = one(render(None, "dashboards.label=my_dashboards", "dashboards.labelValue=yes", "dashboards.namespace=grafana"), "ConfigMap", f"{RELEASE}-dashboards")
    assert cm["metadata"]["labels"]["my_dashboards"] == "yes" and "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "grafana"
    assert one(render(MULTI), "ConfigMap", "headroom-prod-dashboards")["metadata"]["annotations"] == {"grafana_folder": "headroom"}
    assert find(render(None, "dashboards.enabled=false"), "ConfigMap", f"{RELEASE}-dashboards") == []


def test_chart_reads_rules_and_dashboards_through_symlinks_and_packages_them(tmp_path: Path):
    files = CHART / "files"
    assert (files / "alerts").is_symlink() and (files / "alerts").resolve() == ALERTS
    assert (files / "dashboards").is_symlink() and (files / "dashboards").resolve() == DASHBOARDS
    assert [p for p in files.rglob("*") if not p.is_symlink() and p.is_file()] == [], "no copies in the chart"
    helm("package", str(CHART), "--destination", str(tmp_path))
    [tgz] = tmp_path.glob("headroom-*.tgz")
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
        for p in [*RULE_FILES, *DASHBOARDS.glob("*.json")]:
            member = f"headroom/files/{p.parent.name}/{p.name}"
            assert member in names, (member, sorted(names))
            assert tar.extractfile(member).read() == p.read_bytes()
    assert not [n for n in names if n.endswith(".test.yml") or "/ci/" in n], sorted(names)


# ------------------------------------------------------ exporter configs, checked for real


def exporter_args(docs: list[dict], name: str, values: Path | None) -> tuple[str, list[str]]:
    [container] = one(docs, "Deployment", f"{fullname(values)}-{name}")["spec"]["template"]["spec"]["containers"]
    [command] = container["command"]
    return command, container["args"]


MOUNT = "/etc/headroom"  # where the pod mounts the config volume


def local_args(args: list[str], tmp_path: Path) -> list[str]:
    """The rendered arguments with the config volume's files at tmp_path instead."""
    assert f"--config.file={MOUNT}/config.yml" in args
    return [a.replace(f"={MOUNT}/", f"={tmp_path}/") for a in args]


def mount_volume(docs: list[dict], deployment: str, tmp_path: Path) -> dict[str, CertificateAuthority]:
    """Writes the pod's config volume into tmp_path as the kubelet would: the
    ConfigMap's files and, for a projected volume, the Secrets' items at their paths.
    The Secrets hold certificates made here: the first one (the server's, as
    cert-manager writes it) tls.crt, tls.key and ca.crt; any other one a client CA.
    Returns the CA that signed the server certificate ("server") and the CA the client
    CA file holds ("client")."""
    [volume] = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["volumes"]
    sources = volume["projected"]["sources"] if "projected" in volume else [{"configMap": volume["configMap"]}]
    server_ca, other_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    # Valid for the name the ServiceMonitor checks by default.
    server = server_ca.issue(deployment, server=True, dns=(f"{deployment}.{NAMESPACE}.svc",))
    server_secret = {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": server_ca.cert_pem}
    secrets = [s["secret"]["name"] for s in sources if "secret" in s]
    for source in sources:
        if "configMap" in source:
            for key, text in one(docs, "ConfigMap", source["configMap"]["name"])["data"].items():
                (tmp_path / key).write_text(text)
            continue
        for item in source["secret"]["items"]:
            path = tmp_path / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            first = source["secret"]["name"] == secrets[0]
            path.write_bytes(server_secret[item["key"]] if first else other_ca.cert_pem)
    web = tmp_path / "web-config.yml"
    client_ca = yaml.safe_load(web.read_text())["tls_server_config"].get("client_ca_file") if web.exists() else None
    in_use = client_ca and (tmp_path / client_ca).read_bytes() == server_ca.cert_pem
    return {"server": server_ca, "client": server_ca if in_use else other_ca}


def check_with_binary(command: str, args: list[str], config_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs the real exporter with the rendered arguments, the config file at a local path,
    and --config.check: the flags and the config are what the exporter accepts."""
    binary = BIN_DIR / Path(command).name
    assert binary.exists(), f"{binary} is missing: build with cargo build (HEADROOM_BIN_DIR={BIN_DIR})"
    path = tmp_path / "config.yml"
    path.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([str(binary), *local_args(args, tmp_path), "--config.check"], capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
@pytest.mark.parametrize("name", EXPORTERS)
def test_rendered_config_is_the_values_config_and_the_exporter_accepts_it(values: Path | None, name: str, tmp_path: Path):
    docs = render(values)
    cm = one(docs, "ConfigMap", f"{fullname(values)}-{name}")
    text = cm["data"]["config.yml"]
    want = values_of(values).get("exporters", {}).get(name, {}).get("config") or {}
    if values == MULTI:
        assert want, "the multi-account values configure every exporter"
    assert yaml.safe_load(text) == want
    command, args = exporter_args(docs, name, values)
    assert command == f"/usr/local/bin/{EXPORTERS[name].binary}"
    assert f"--web.listen-address=:{EXPORTERS[name].default_port}" in args
    # With TLS, the web config and its certificate files too, laid out as in the pod.
    mount_volume(docs, f"{fullname(values)}-{name}", tmp_path)
    assert (f"--web.config.file={MOUNT}/web-config.yml" in args) == (values == TLS)
    r = check_with_binary(command, args, text, tmp_path)
    assert r.returncode == 0, r.stderr


def test_exporter_rejects_a_bad_rendered_web_config(tmp_path: Path):
    """The TLS check above can fail: without the certificate files the exporter stops,
    naming the file."""
    docs = render(TLS)
    text = one(docs, "ConfigMap", f"{RELEASE}-ssm")["data"]["config.yml"]
    (tmp_path / "web-config.yml").write_text(one(docs, "ConfigMap", f"{RELEASE}-ssm")["data"]["web-config.yml"])
    r = check_with_binary(*exporter_args(docs, "ssm", TLS), text, tmp_path)
    assert r.returncode != 0 and f"tls_server_config.cert_file {tmp_path}/tls/tls.crt" in r.stderr, r.stderr


def test_exporter_rejects_a_bad_rendered_config(tmp_path: Path):
    """The check above can fail: a bad region in the values stops the exporter."""
    docs = render(None, "exporters.ssm.config.regions[0]=Frankfurt")
    text = one(docs, "ConfigMap", f"{RELEASE}-ssm")["data"]["config.yml"]
    r = check_with_binary(*exporter_args(docs, "ssm", None), text, tmp_path)
    assert r.returncode != 0 and "regions[0]" in r.stderr, r.stderr


def test_schema_rejects_unquoted_account_ids_and_unknown_keys(tmp_path: Path):
    # An unquoted account ID is a number to Helm: 012345678901 would lose its zero.
    path = tmp_path / "values.yaml"
    path.write_text("exporters:\n  ssm:\n    config:\n      accounts:\n        - account_id: 012345678901\n")
    r = helm("template", RELEASE, str(CHART), "-f", str(path), check=False)
    assert r.returncode != 0 and "account_id" in r.stderr, r.stderr
    r = helm("template", RELEASE, str(CHART), "--set", "exporters.ssm.prot=1", check=False)
    assert r.returncode != 0 and "prot" in r.stderr, r.stderr


def test_schema_rejects_probe_settings_kubernetes_rejects():
    # The API server refuses a liveness successThreshold other than 1 and a readiness
    # terminationGracePeriodSeconds: say so at `helm install`, not at apply time.
    for bad in ("livenessProbe.successThreshold=2", "readinessProbe.terminationGracePeriodSeconds=30"):
        r = helm("template", RELEASE, str(CHART), "--set", bad, check=False)
        assert r.returncode != 0 and bad.split(".")[1].split("=")[0] in r.stderr, (bad, r.stderr)
    for good in ("livenessProbe.successThreshold=1", "readinessProbe.successThreshold=2", "livenessProbe.terminationGracePeriodSeconds=30"):
        helm("template", RELEASE, str(CHART), "--set", good)


def test_config_change_rolls_only_that_exporter():
    def checksums(docs: list[dict]) -> dict[str, str]:
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for d in find(docs, "Deployment")}

    before = checksums(render())
    after = checksums(render(None, "exporters.ecr.config.regions[0]=eu-west-1"))
    assert before.keys() == after.keys() == {f"{RELEASE}-{n}" for n in EXPORTERS}
    assert before[f"{RELEASE}-ecr"] != after[f"{RELEASE}-ecr"]
    assert all(before[f"{RELEASE}-{n}"] == after[f"{RELEASE}-{n}"] for n in EXPORTERS if n != "ecr")
    # The checksum is the mounted file's.
    cm = one(render(), "ConfigMap", f"{RELEASE}-ecr")
    assert before[f"{RELEASE}-ecr"] == hashlib.sha256(cm["data"]["config.yml"].rstrip("\n").encode()).hexdigest()


# -------------------------------------------------------------------- toggles and names


@pytest.mark.parametrize("name", EXPORTERS)
def test_disabling_an_exporter_removes_its_resources(name: str):
    all_docs = render(None, "replicas=2")
    docs = render(None, "replicas=2", f"exporters.{name}.enabled=false")
    gone = {(d["kind"], d["metadata"]["name"]) for d in all_docs} - {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert gone == {(k, f"{RELEASE}-{name}") for k in ("Deployment", "Service", "ServiceMonitor", "ConfigMap", "PodDisruptionBudget")}
    assert not [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == f"{name}-exporter"]


def test_without_exporters_only_rules_and_dashboards_remain():
    docs = render(None, *(f"exporters.{n}.enabled=false" for n in EXPORTERS))
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [("ConfigMap", f"{RELEASE}-dashboards"), ("PrometheusRule", RELEASE)]


def test_service_monitors_can_be_turned_off_cleanly():
    docs = render(None, "serviceMonitor.enabled=false")
    assert find(docs, "ServiceMonitor") == []
    assert docs == [d for d in render() if d["kind"] != "ServiceMonitor"]


def test_releases_do_not_collide():
    """Sharding is several releases: their resources and selectors stay apart."""
    a, b = render(release="quotas-a"), render(release="quotas-b")
    assert not {(d["kind"], d["metadata"]["name"]) for d in a} & {(d["kind"], d["metadata"]["name"]) for d in b}
    for svc in find(a, "Service"):
        assert not [d for d in find(b, "Deployment") if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
    for sm in find(a, "ServiceMonitor"):
        assert not [s for s in find(b, "Service") if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    names = {d["metadata"]["name"] for d in render(MULTI)}
    assert names == {"headroom-prod", "headroom-prod-dashboards"} | {f"headroom-prod-{n}" for n in EXPORTERS}


def test_the_chart_knows_every_exporter_of_the_workspace_and_runs_its_binary():
    """headroom.exporterList (templates/_helpers.tpl), values.yaml and the schema name the
    workspace's exporters, no more; each Deployment runs its exporter's own binary (the
    names follow no one pattern: servicequotas_exporter next to ssm_quota_exporter),
    and every exporter is on by default."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["exporters"]
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["exporters"]["properties"]
    assert set(values) == set(EXPORTERS), f"values.yaml exporters: {sorted(values)}, the workspace: {sorted(EXPORTERS)}"
    assert set(schema) == set(EXPORTERS), f"values.schema.json exporters: {sorted(schema)}, the workspace: {sorted(EXPORTERS)}"
    assert all(v["enabled"] for v in values.values())
    commands = {name.removeprefix(f"{RELEASE}-"): c["command"] for name, c in containers(render())}
    assert commands == {n: [f"/usr/local/bin/{e.binary}"] for n, e in EXPORTERS.items()}
    # The first exporter of the list is the one the chart's notes show.
    order = [d["metadata"]["name"].removeprefix(f"{RELEASE}-") for d in find(render(), "Deployment")]
    assert order == list(EXPORTERS), f"templates/_helpers.tpl lists the exporters as {order}, Cargo.toml as {list(EXPORTERS)}"


def test_the_readme_table_of_the_chart_lists_every_exporter():
    """README.md 'Installing in Kubernetes': one row per exporter with its values key,
    the command the chart runs, its port and its IAM policy file."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Installing in Kubernetes\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "README.md has no '## Installing in Kubernetes' section"
    rows = [
        [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        for line in m.group(1).splitlines()
        if line.startswith("| `exporters.")
    ]
    want = [
        [f"exporters.{n}", f"/usr/local/bin/{e.binary}", str(e.default_port), f"deploy/iam/{e.binary.replace('_', '-')}.json"]
        for n, e in EXPORTERS.items()
    ]
    assert rows == want, f"README.md 'Installing in Kubernetes' table: {rows}, want {want}"
    for _, _, _, policy in rows:
        assert (ROOT / policy).exists(), policy


def test_long_release_names_fit_every_exporter_and_keep_existing_names(tmp_path: Path):
    """Names are at most 63 characters with the longest exporter key; the full name is
    cut only as far as each suffix needs, so names that fitted before stay the same."""
    release = "r" * 53  # the longest release name Helm accepts
    docs = render(None, "replicas=2", release=release)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names), names
    # The exporters' resources; a Service's name is a DNS label.
    ours = [n for _, n in names if not n.endswith("-dashboards")]
    assert all(len(n) <= 63 for n in ours), [n for n in ours if len(n) > 63]
    full = f"{release}-headroom"[:59]
    for n in EXPORTERS:
        name = f"{full[: 62 - len(n)].rstrip('-')}-{n}"
        for kind in ("Deployment", "Service", "ConfigMap", "ServiceMonitor", "PodDisruptionBudget"):
            one(docs, kind, name)
    assert one(docs, "Deployment", f"{full}-ssm")
    r = kubernetes_validate([d for d in docs if d["kind"] not in CRD_KINDS], tmp_path)
    assert r.returncode == 0 and "WARN" not in r.stdout and "ERROR" not in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------- pods: hardening, sizing


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_every_container_is_hardened_probed_and_sized(values: Path | None):
    docs = render(values)
    found = containers(docs)
    assert len(found) == len(EXPORTERS)
    for deployment in find(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        [volume] = pod["volumes"]
        config_map = volume["projected"]["sources"][0] if values == TLS else volume
        assert config_map["configMap"]["name"] == deployment["metadata"]["name"]
    for deployment_name, c in found:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        ports = {p["name"] for p in c["ports"]}
        if values == TLS:
            # Mutual TLS: the kubelet has no client certificate, so a TCP connection.
            assert c["livenessProbe"]["tcpSocket"]["port"] in ports and "httpGet" not in c["livenessProbe"]
            assert c["readinessProbe"]["tcpSocket"]["port"] in ports and "httpGet" not in c["readinessProbe"]
        else:
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["livenessProbe"]["httpGet"]["port"] in ports
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["readinessProbe"]["httpGet"]["port"] in ports
            assert "scheme" not in c["livenessProbe"]["httpGet"] and "scheme" not in c["readinessProbe"]["httpGet"]
        assert c["volumeMounts"] == [{"name": "config", "mountPath": "/etc/headroom", "readOnly": True}]
        res = c["resources"]
        assert "cpu" not in res.get("limits", {}), f"{deployment_name}: no CPU limit"
        if deployment_name.endswith("-ecr") and values == MULTI:
            assert res == values_of(MULTI)["exporters"]["ecr"]["resources"]
        else:
            assert res == {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def test_image_defaults_to_the_app_version():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for _, c in containers(render())}
    assert images == {f"ghcr.io/headroom-exporters/headroom:{app_version}"}
    assert {c["image"] for _, c in containers(render(None, "image.tag=1.2.3"))} == {"ghcr.io/headroom-exporters/headroom:1.2.3"}
    digest = "sha256:" + "a" * 64
    assert {c["image"] for _, c in containers(render(None, f"image.digest={digest}"))} == {f"ghcr.io/headroom-exporters/headroom@{digest}"}


def test_environment_shared_and_per_exporter():
    docs = render(MULTI, "exporters.s3.env[0].name=AWS_STS_REGIONAL_ENDPOINTS", "exporters.s3.env[0].value=regional")
    for deployment_name, c in containers(docs):
        env = [(e["name"], e.get("value")) for e in c["env"]]
        assert env[0] == ("AWS_REGION", "eu-west-1")
        assert (("AWS_STS_REGIONAL_ENDPOINTS", "regional") in env) == deployment_name.endswith("-s3")
    assert all("env" not in c for _, c in containers(render()))


def test_service_account_for_irsa():
    docs = render(MULTI)
    [sa] = find(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/headroom"}
    assert {d["spec"]["template"]["spec"]["serviceAccountName"] for d in find(docs, "Deployment")} == {sa["metadata"]["name"]}
    shared = render(None, "serviceAccount.create=false", "serviceAccount.name=headroom-shared")
    assert find(shared, "ServiceAccount") == []
    assert {d["spec"]["template"]["spec"]["serviceAccountName"] for d in find(shared, "Deployment")} == {"headroom-shared"}


def test_pod_disruption_budget_only_with_replicas(tmp_path: Path):
    assert find(render(), "PodDisruptionBudget") == [], "one replica: no budget"
    docs = render(MULTI)  # replicas 2, but 1 for ECR
    pdbs = {d["metadata"]["name"]: d for d in find(docs, "PodDisruptionBudget")}
    assert set(pdbs) == {f"headroom-prod-{n}" for n in EXPORTERS if n != "ecr"}
    for name, pdb in pdbs.items():
        deployment = one(docs, "Deployment", name)
        assert deployment["spec"]["replicas"] == 2
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert one(docs, "Deployment", "headroom-prod-ecr")["spec"]["replicas"] == 1
    docs = render(None, "replicas=3", "podDisruptionBudget.minAvailable=2", "podDisruptionBudget.unhealthyPodEvictionPolicy=AlwaysAllow")
    for pdb in find(docs, "PodDisruptionBudget"):
        assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert len(find(docs, "PodDisruptionBudget")) == len(EXPORTERS)
    # unhealthyPodEvictionPolicy is newer than the oldest supported Kubernetes.
    r = kubernetes_validate(find(docs, "PodDisruptionBudget"), tmp_path, versions=K8S_VERSIONS[-1:])
    assert r.returncode == 0 and "WARN" not in r.stdout, r.stdout + r.stderr
    assert find(render(None, "replicas=3", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget") == []


# ---------------------------------------------------------------------------- TLS

TLS_MODES = {
    "tls": ("web.tls.enabled=true", "web.tls.secretName=headroom-tls"),
    "verify-if-given": (
        "web.tls.enabled=true",
        "web.tls.secretName=headroom-tls",
        "web.tls.clientAuthType=VerifyClientCertIfGiven",
        "web.tls.clientCA.secretName=prometheus-client-ca",
        "serviceMonitor.tls.clientCertSecretName=prometheus-client-tls",
    ),
    "mutual": tuple(f"{k}={v}" for k, v in {
        "web.tls.enabled": "true",
        "web.tls.secretName": "headroom-tls",
        "web.tls.minVersion": "TLS13",
        "web.tls.clientAuthType": "RequireAndVerifyClientCert",
        "web.tls.clientCA.secretName": "prometheus-client-ca",
        "serviceMonitor.tls.clientCertSecretName": "prometheus-client-tls",
    }.items()),
}


def test_the_tls_values_file_is_the_mutual_mode():
    assert render(TLS) == render(None, *TLS_MODES["mutual"])


@pytest.mark.parametrize("mode", TLS_MODES, ids=TLS_MODES.keys())
def test_tls_modes_validate_and_mount_what_the_web_config_names(mode: str, tmp_path: Path):
    docs = render(None, *TLS_MODES[mode])
    r = kubernetes_validate([d for d in docs if d["kind"] not in CRD_KINDS], tmp_path)
    assert r.returncode == 0 and "WARN" not in r.stdout and "ERROR" not in r.stdout, r.stdout + r.stderr
    for name in EXPORTERS:
        deployment = one(docs, "Deployment", f"{RELEASE}-{name}")
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert f"--web.config.file={MOUNT}/web-config.yml" in container["args"]
        assert container["volumeMounts"] == [{"name": "config", "mountPath": MOUNT, "readOnly": True}]
        web = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-{name}")["data"]["web-config.yml"])["tls_server_config"]
        [volume] = pod["volumes"]
        paths = {i["path"] for s in volume["projected"]["sources"] if "secret" in s for i in s["secret"]["items"]}
        # Every file the web config names (relative to its directory) is in the volume.
        assert {web[k] for k in ("cert_file", "key_file", "client_ca_file") if k in web} == paths
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/web-config"] == hashlib.sha256(
            one(docs, "ConfigMap", f"{RELEASE}-{name}")["data"]["web-config.yml"].rstrip("\n").encode()
        ).hexdigest()
        probe = container["livenessProbe"]
        if mode == "mutual":
            assert "tcpSocket" in probe
        else:
            assert probe["httpGet"]["scheme"] == "HTTPS" and container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_tls_settings_that_cannot_work_fail_at_render():
    r = helm("template", RELEASE, str(CHART), "--set", "web.tls.enabled=true", check=False)
    assert r.returncode != 0 and "web.tls.secretName" in r.stderr, r.stderr
    mutual = ("web.tls.enabled=true", "web.tls.secretName=s", "web.tls.clientAuthType=RequireAndVerifyClientCert")
    r = helm("template", RELEASE, str(CHART), *(a for m in mutual for a in ("--set", m)), check=False)
    assert r.returncode != 0 and "serviceMonitor.tls.clientCertSecretName" in r.stderr, r.stderr
    # Without ServiceMonitors nobody needs the client certificate.
    helm("template", RELEASE, str(CHART), *(a for m in (*mutual, "serviceMonitor.enabled=false") for a in ("--set", m)))
    for bad in ("web.tls.minVersion=TLS10", "web.tls.clientAuthType=RequireAnyClientCert", "serviceMonitor.tls.caFile=x"):
        r = helm("template", RELEASE, str(CHART), "--set", bad, check=False)
        assert r.returncode != 0 and bad.split(".")[-1].split("=")[0] in r.stderr, (bad, r.stderr)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("mode", TLS_MODES, ids=TLS_MODES.keys())
def test_the_rendered_probes_and_scrape_reach_a_tls_exporter(mode: str, aws, tmp_path: Path):
    """The SSM exporter run with the rendered arguments and the volume as the pod sees
    it; probed as the kubelet would (HTTPS without verification, or a TCP connection),
    and scraped as the ServiceMonitor says (its scheme, CA, server name and client
    certificate)."""
    docs = render(None, *TLS_MODES[mode])
    command, args = exporter_args(docs, "ssm", None)
    cas = mount_volume(docs, f"{RELEASE}-ssm", tmp_path)
    port = free_port()
    args = [f"--web.listen-address=127.0.0.1:{port}" if a.startswith("--web.listen-address=") else a for a in local_args(args, tmp_path)]
    log_path = tmp_path / "exporter.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN_DIR / Path(command).name), *args], env=aws_env(aws), stdout=log, stderr=subprocess.STDOUT)
        try:
            [container] = one(docs, "Deployment", f"{RELEASE}-ssm")["spec"]["template"]["spec"]["containers"]

            def probe(spec: dict) -> bool:
                assert proc.poll() is None, log_path.read_text()
                if "tcpSocket" in spec:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    except OSError:
                        return False
                    return True
                get = spec["httpGet"]
                # The kubelet does not verify the certificate of an HTTPS probe, and
                # sends no client certificate.
                url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{get['path']}"
                return requests.get(url, verify=False, timeout=2).status_code == 200

            wait_until(lambda: probe(container["livenessProbe"]), 30, "the liveness probe")
            wait_until(lambda: probe(container["readinessProbe"]), 60, "the readiness probe")
            [endpoint] = one(docs, "ServiceMonitor", f"{RELEASE}-ssm")["spec"]["endpoints"]
            assert endpoint["scheme"] == "https"
            tls = endpoint["tlsConfig"]
            assert tls["ca"]["secret"] == {"name": "headroom-tls", "key": "ca.crt"}
            ctx = ssl.create_default_context(cadata=cas["server"].cert_pem.decode())
            if "cert" in tls:
                client = cas["client"].issue("prometheus", client=True)
                ctx.load_cert_chain(*client.write(tmp_path / "prometheus.crt", tmp_path / "prometheus.key"))
            status, body, _ = tls_get(port, ctx, endpoint["path"], host=tls["serverName"])
            assert status == 200 and "aws_quota_exporter_build_info" in body
        finally:
            terminate(proc, 10)
