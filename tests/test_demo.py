"""The README's demo command, as a newcomer runs it: scripts/demo.sh starts the test
server, every exporter (tests/exporters.py) and a Prometheus with the alert rules,
prints the URLs, the fullest quotas and the alerts, and Ctrl-C stops everything it
started. It uses the suite's build (HEADROOM_BIN_DIR) instead of building again."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time

import requests

from conftest import BIN_DIR, ROOT, free_port
from exporters import EXPORTERS


def answers_ready(url: str, within: float = 60) -> bool:
    """`url` answers 200 before the deadline: a slow answer on a busy machine is no failure."""
    deadline = time.monotonic() + within
    while True:
        try:
            if requests.get(url, timeout=max(1.0, deadline - time.monotonic())).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_demo_shows_quotas_and_alerts_and_ctrl_c_stops_it():
    ports = {name: free_port() for name in ("AWS_PORT", *(e.port_variable for e in EXPORTERS), "PROM_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "HEADROOM_BIN_DIR": str(BIN_DIR)}
    proc = subprocess.Popen(
        ["scripts/demo.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as in a terminal
        # A shell in a terminal gets Ctrl-C; when this suite itself runs in the
        # background, SIGINT would be inherited as ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output = ""
    try:
        deadline = time.monotonic() + 300
        while "Press Ctrl-C to stop." not in output:
            assert time.monotonic() < deadline, f"the demo did not come up:\n{output}"
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            assert line is not None, f"the demo exited with {proc.wait()}:\n{output}"
            output += line
        # The URLs, and every service really there.
        for e in EXPORTERS:
            port = ports[e.port_variable]
            assert e.binary in output and f"http://127.0.0.1:{port}/metrics" in output, f"the demo does not show {e.binary}:\n{output}"
            assert answers_ready(f"http://127.0.0.1:{port}/readyz"), e.binary
        assert f"http://127.0.0.1:{ports['PROM_PORT']}/alerts" in output
        # The sample data's fullest quotas, as the README describes them.
        quotas = output.split("Usage against limits")[1].split("Alerts in Prometheus")[0]
        rows = quotas.splitlines()
        assert any("96.1%" in r and "Standard parameters" in r for r in rows), quotas
        assert any("95.0%" in r and "Images per repository (payments/api)" in r for r in rows), quotas
        assert any("91.5%" in r and "General purpose buckets" in r for r in rows), quotas
        assert any("92.2%" in r and "ec2  Running On-Demand Standard" in r for r in rows), quotas
        # The rules are loaded: the almost-full alert waits on those quotas, of every
        # exporter (the demo shows them once every target's are in), the watchdog fires.
        alerts = output.split("Alerts in Prometheus")[1]
        # (Not `lines`: that is the reader thread's queue.) One alert a line: state,
        # name, severity, then where.
        alert_rows = [r.split() for r in alerts.splitlines()]

        def alert(severity: str, where: str) -> bool:
            """A pending AwsQuotaAlmostFull of this severity on this very quota, all on
            one line (another quota's line with that severity does not count)."""
            return any(r[:3] == ["pending", "AwsQuotaAlmostFull", severity] and " ".join(r[3:]) == where for r in alert_rows)

        assert alert("critical", "210987654321 eu-west-1 ssm standard_parameters"), alerts  # ssm
        assert alert("critical", "123456789012 eu-west-1 ecr L-03A36CE1 payments/api"), alerts  # ecr
        assert alert("warning", "123456789012 eu-west-1 ec2 L-1216C47A"), alerts  # servicequotas
        assert not alert("critical", "123456789012 eu-west-1 ec2 L-1216C47A"), alerts
        assert alert("warning", "210987654321 global s3 L-DC2B2D3D"), alerts  # s3
        assert not alert("critical", "210987654321 global s3 L-DC2B2D3D"), alerts
        assert ["firing", "AwsQuotaWatchdog", "none"] in alert_rows, alerts
    finally:
        # Ctrl-C in the terminal: SIGINT to the whole process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code in (0, 130), f"exit {code}:\n{output}"
    deadline = time.monotonic() + 10
    while any(listening(p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    still = [name for name, p in ports.items() if listening(p)]
    assert still == [], f"still listening after Ctrl-C: {still}"


def test_a_taken_port_stops_the_demo_before_it_starts_anything():
    """An SRE's own Prometheus on the demo's port: the demo names the port and the
    variable that moves it, and exits without starting anything, so it never shows
    another program's numbers as its own."""
    ports = {name: free_port() for name in ("AWS_PORT", *(e.port_variable for e in EXPORTERS), "PROM_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "HEADROOM_BIN_DIR": str(BIN_DIR)}
    for taken in ("PROM_PORT", EXPORTERS[0].port_variable):
        with socket.socket() as somebody_else:
            somebody_else.bind(("127.0.0.1", ports[taken]))
            somebody_else.listen()
            r = subprocess.run(["scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode != 0, r.stdout + r.stderr
        assert f"port {ports[taken]} is already in use" in r.stderr and taken in r.stderr, r.stderr
        assert "headroom demo is running" not in r.stdout, r.stdout
        others = [name for name, p in ports.items() if name != taken and listening(p)]
        assert others == [], f"left listening: {others}"
