"""Everything that names the exporters names every exporter of the workspace
(tests/exporters.py), with its binary and default port; a failure names the exporter
and the file to change.

Covered elsewhere, from the same list or the same crates:
- the Dockerfile (binary copied, port exposed, one stage each): tests/test_docker.py;
- deploy/iam (one policy per crate under exporters/): tests/test_iam.py;
- the demo's run and the Prometheus end-to-end test start every exporter of the list:
  tests/test_demo.py, tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess

import jsonschema
import pytest
import yaml

from conftest import BIN_DIR, ROOT
from exporters import EXPORTERS, Exporter

each_exporter = pytest.mark.parametrize("exp", EXPORTERS, ids=str)
CHART = ROOT / "charts" / "headroom"


def test_the_list_is_the_workspace_and_its_ports_are_distinct():
    """Every exporter crate has sources and a built binary; no two share a name or a
    default port (they run side by side in the demo, the image and the chart)."""
    for e in EXPORTERS:
        assert (ROOT / e.crate_dir / "src" / "main.rs").exists(), f"{e.crate_dir}: no src/main.rs"
        assert (BIN_DIR / e.binary).exists(), f"{e.binary} is not built in {BIN_DIR}"
    for attr in ("short", "binary", "default_port"):
        values = [getattr(e, attr) for e in EXPORTERS]
        assert len(set(values)) == len(values), f"exporters share a {attr}: {values}"
    on_disk = {p.parent.name for p in (ROOT / "exporters").glob("*/Cargo.toml")}
    assert on_disk == {e.short for e in EXPORTERS}, f"crates under exporters/ that are not workspace members: {sorted(on_disk - {e.short for e in EXPORTERS})}"


# --- the Helm chart -------------------------------------------------------------------


@functools.cache
def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@each_exporter
def test_the_chart_values_have_it_with_its_port(exp: Exporter):
    entry = chart_values()["exporters"].get(exp.short)
    assert entry is not None, f"charts/headroom/values.yaml: no exporters.{exp.short} for {exp.binary}"
    assert entry.get("port") == exp.default_port, f"charts/headroom/values.yaml: exporters.{exp.short}.port is {entry.get('port')}, {exp.binary}'s default is {exp.default_port}"


@each_exporter
def test_the_chart_schema_accepts_it(exp: Exporter):
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = {"exporters": {exp.short: {"enabled": True, "port": exp.default_port}}}
    try:
        jsonschema.validate(values, schema)
    except jsonschema.ValidationError as e:
        pytest.fail(f"charts/headroom/values.schema.json refuses exporters.{exp.short} ({exp.binary}): {e.message}")


@functools.cache
def rendered_containers() -> list[dict]:
    from test_helm import containers, render

    return [c for _, c in containers(render())]


@each_exporter
def test_the_chart_runs_it_on_its_port(exp: Exporter):
    """The chart renders a Deployment for it (headroom.exporterNames in
    templates/_helpers.tpl) that runs its binary on its port."""
    found = [c for c in rendered_containers() if c["command"] == [f"/usr/local/bin/{exp.binary}"]]
    assert len(found) == 1, (
        f"charts/headroom: {len(found)} containers run /usr/local/bin/{exp.binary} "
        f"(is {exp.short} in headroom.exporterNames of templates/_helpers.tpl?): {[c['command'] for c in rendered_containers()]}"
    )
    assert f"--web.listen-address=:{exp.default_port}" in found[0]["args"], f"charts/headroom: {exp.binary} args {found[0]['args']}"


# --- the demo -------------------------------------------------------------------------


@functools.cache
def demo_exporters() -> list[tuple[str, str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PORT")}
    r = subprocess.run(
        ["scripts/demo.sh", "--list-exporters"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "HEADROOM_BIN_DIR": str(BIN_DIR)},
    )
    assert r.returncode == 0, f"scripts/demo.sh --list-exporters: {r.stdout}{r.stderr}"
    return [(name, binary, int(port)) for name, binary, port in (line.split() for line in r.stdout.splitlines())]


@each_exporter
def test_the_demo_starts_it_on_its_port(exp: Exporter):
    listed = demo_exporters()
    assert (exp.short, exp.binary, exp.default_port) in listed, f"scripts/demo.sh does not start {exp.binary} on {exp.default_port}: {listed}"


def test_the_demo_starts_nothing_else():
    extra = set(demo_exporters()) - {(e.short, e.binary, e.default_port) for e in EXPORTERS}
    assert not extra, f"scripts/demo.sh starts exporters the workspace does not have: {sorted(extra)}"


# --- golden exposition ----------------------------------------------------------------


@functools.cache
def golden_files_tested() -> set[str]:
    """The file names test functions of tests/test_golden.py pass to check_golden()."""
    tree = ast.parse((ROOT / "tests" / "test_golden.py").read_text())
    names = set()
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_golden" and node.args:
                    if isinstance(node.args[0], ast.Constant):
                        names.add(node.args[0].value)
    return names


@each_exporter
def test_it_has_a_golden_exposition_and_a_test_for_it(exp: Exporter):
    name = f"{exp.binary}.prom"
    assert (ROOT / "tests" / "golden" / name).exists(), f"tests/golden/{name} is missing for {exp.binary} (`make golden` writes it)"
    assert name in golden_files_tested(), f"tests/test_golden.py has no test that calls check_golden({name!r}) for {exp.binary}"


# --- README -----------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


@each_exporter
def test_the_readme_lists_it_with_its_default_port(exp: Exporter):
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in readme_section("What it exports").splitlines()
        if line.startswith("|") and f"`{exp.binary}`" in line
    ]
    assert rows, f"README.md 'What it exports' table has no row for `{exp.binary}`"
    assert str(exp.default_port) in rows[0], f"README.md 'What it exports': the row of `{exp.binary}` does not give its port {exp.default_port}: {rows[0]}"
    flag = next((line for line in readme_section("Endpoints and flags").splitlines() if line.startswith("| `--web.listen-address`")), "")
    assert f"`:{exp.default_port}` ({exp.short})" in flag, f"README.md 'Endpoints and flags': --web.listen-address does not give `:{exp.default_port}` ({exp.short}): {flag}"


# --- the Prometheus end-to-end test -----------------------------------------------------


@each_exporter
def test_the_prometheus_end_to_end_test_starts_it(exp: Exporter):
    import test_prometheus_e2e

    configs = test_prometheus_e2e.exporter_configs()
    assert exp.binary in configs, f"tests/test_prometheus_e2e.py does not start {exp.binary}"
    assert configs[exp.binary][0] == exp.short
