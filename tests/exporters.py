"""The one list of exporters, read from the workspace itself, so that tests (and
whatever else names exporters) pick up a new exporter crate without being edited.

An exporter is a member of the root Cargo.toml `[workspace] members` under
`exporters/`, with exactly one `[[bin]]` in its own Cargo.toml. Its default port is
what its binary's `--help` prints for `--web.listen-address` (clap's
`[default: :9811]`), read once per binary from $HEADROOM_BIN_DIR.

    from exporters import EXPORTERS
    @pytest.mark.parametrize("exp", EXPORTERS, ids=str)
"""

from __future__ import annotations

import functools
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from conftest import BIN_DIR, ROOT


@dataclass(frozen=True)
class Exporter:
    crate_dir: str  # "exporters/ecr", relative to the repository root
    short: str  # "ecr": the crate's directory name, used by the chart, the demo, IAM
    binary: str  # "ecr_quota_exporter": the crate's [[bin]] name

    @property
    def default_port(self) -> int:
        return default_port(self.binary)

    @property
    def port_variable(self) -> str:
        """The environment variable scripts/demo.sh reads this exporter's port from."""
        return self.short.upper().replace("-", "_") + "_PORT"

    def __str__(self) -> str:
        return self.short


def workspace_exporters(root: Path = ROOT) -> list[Exporter]:
    """The workspace members under exporters/, in the order Cargo.toml lists them."""
    members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
    found = []
    for member in members:
        if not member.startswith("exporters/"):
            continue
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        bins = [b["name"] for b in manifest.get("bin", [])]
        assert len(bins) == 1, f"{member}/Cargo.toml: an exporter crate has exactly one [[bin]], found {bins}"
        found.append(Exporter(crate_dir=member, short=Path(member).name, binary=bins[0]))
    assert found, "Cargo.toml: no workspace member under exporters/"
    return found


@functools.cache
def default_port(binary: str) -> int:
    """The port of the binary's default --web.listen-address, from its own --help."""
    path = BIN_DIR / binary
    assert path.exists(), f"{path} is missing: build the workspace (HEADROOM_BIN_DIR={BIN_DIR})"
    help_text = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    # The flag's entry runs from its name to the next line that starts another flag
    # (clap wraps long help over several lines).
    entry = re.search(r"^\s*--web\.listen-address\b.*?(?=^\s*-|\Z)", help_text, re.M | re.S)
    m = re.search(r"\[default: ([^\]]*)\]", entry.group(0)) if entry else None
    assert m, f"{binary} --help shows no [default: ...] for --web.listen-address:\n{help_text}"
    return int(m.group(1).rsplit(":", 1)[1])


EXPORTERS: list[Exporter] = workspace_exporters()
