"""The container image's Dockerfile: hadolint clean, built with the same cargo command
and toolchain as CI, holding every exporter binary the workspace defines, exposing
each exporter's default port, as a non-root user, on base images given as build
arguments. The release build (the build stage) is checked here through what it runs;
tests/test_image.py builds the runtime stages and runs the exporters from them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from exporters import EXPORTERS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            current = m.group(1) if m else rest
            result[current] = []
        if current:
            result[current].append((word, rest))
    return result


def cargo_build(command: str) -> list[str]:
    """The arguments of the `cargo build` in a shell command line, without env assignments."""
    words = shlex.split(command)
    i = next(i for i in range(len(words) - 1) if words[i] == "cargo" and words[i + 1] == "build")
    args = []
    for w in words[i + 2 :]:
        if w in ("&&", ";", "||", "|"):
            break
        args.append(w)
    return args


def default_ports() -> dict[str, int]:
    """Every exporter binary of the workspace (tests/exporters.py) and its default port."""
    return {e.binary: e.default_port for e in EXPORTERS}


def test_hadolint_is_clean():
    assert HADOLINT.exists(), "hadolint is not installed: run scripts/setup.sh"
    r = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_build_stage_runs_the_cargo_build_ci_runs():
    ci = next(line for line in (ROOT / "scripts" / "test.sh").read_text().splitlines() if line.startswith("cargo build"))
    ci_args = cargo_build(ci)
    runs = [rest for word, rest in stages()["build"] if word == "RUN" and "cargo build" in rest]
    assert len(runs) == 1, runs
    docker_args = cargo_build(runs[0])
    # The same flags, except that CI builds every target in debug mode and the image
    # only the binaries in release mode.
    assert sorted(a for a in ci_args if a != "--all-targets") == sorted(a for a in docker_args if a not in ("--release", "--bins"))
    assert "--locked" in docker_args and "--release" in docker_args
    # And so does the benchmark build.
    bench = next(line for line in (ROOT / "bench" / "run.sh").read_text().splitlines() if line.startswith("cargo build"))
    assert cargo_build(bench) == docker_args


def test_the_build_stage_uses_the_toolchain_ci_tests_with():
    arg = next(rest for word, rest in instructions() if word == "ARG" and rest.startswith("RUST_VERSION="))
    image_version = arg.split("=", 1)[1]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout
    machine = re.match(r"rustc (\d+\.\d+)\.", rustc).group(1)
    assert image_version == machine, f"Dockerfile builds with Rust {image_version}, CI tests with {machine}"
    minimum = re.search(r'^rust-version = "([\d.]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert tuple(map(int, image_version.split("."))) >= tuple(map(int, minimum.split(".")))


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM and their defaults."""
    args = {}
    for word, rest in instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def copied_binaries(stage: list[tuple[str, str]]) -> set[str]:
    names = set()
    for word, rest in stage:
        if word == "COPY" and "--from=binaries" in rest:
            names |= {Path(src).name for src in shlex.split(rest)[1:-1]}
    return names


def final_stages() -> dict[str, list[tuple[str, str]]]:
    """The images users get: every stage after the runtime stage."""
    s = stages()
    names = list(s)
    return {name: s[name] for name in names[names.index("runtime") + 1 :]}


def test_the_base_images_are_build_arguments_with_the_public_defaults():
    """A release builds on the public images; tests/test_image.py passes a local
    runtime base (and BINARIES=prebuilt) to the same file."""
    args = global_args()
    assert args["BUILD_IMAGE"] == "docker.io/library/rust:${RUST_VERSION}-bookworm"
    assert args["RUNTIME_IMAGE"] == "gcr.io/distroless/cc-debian12:nonroot"
    assert args["BINARIES"] == "build"
    s = stages()
    assert s["build"][0][1] == "${BUILD_IMAGE} AS build"
    assert s["runtime"][0][1] == "${RUNTIME_IMAGE} AS runtime"
    assert s["binaries"] == [("FROM", "${BINARIES} AS binaries")]
    # The stage for binaries built elsewhere takes the build context and nothing else.
    assert s["prebuilt"] == [("FROM", "scratch AS prebuilt"), ("COPY", ". /out/")]
    # The stages between the release build and the images are in this order, so that a
    # runtime stage can only copy what the `binaries` stage chose.
    assert list(s)[:4] == ["build", "prebuilt", "binaries", "runtime"]


def test_the_images_copy_only_the_chosen_binaries_and_run_nothing():
    """Every image is the runtime stage plus binaries from the `binaries` stage. Nothing
    runs in them: distroless has no shell, so a RUN that works on the tests' Debian
    stand-in would break the release build."""
    for name, stage in {"runtime": stages()["runtime"], **final_stages()}.items():
        assert not [rest for word, rest in stage if word == "RUN"], f"Dockerfile: stage {name!r} runs a command"
        for word, rest in stage:
            if word in ("COPY", "ADD"):
                assert word == "COPY" and rest.startswith("--from=binaries /out/"), f"Dockerfile: stage {name!r}: {word} {rest}"


def test_every_exporter_binary_is_in_the_image_with_its_port():
    ports = default_ports()
    bins = set(ports)
    s = stages()
    # The default (last) stage holds all of them and exposes every default port.
    last = list(s)[-1]
    copied = copied_binaries(s[last])
    exposed = {int(p) for word, rest in s[last] if word == "EXPOSE" for p in rest.split()}
    for binary, port in ports.items():
        assert binary in copied, f"Dockerfile: the default stage {last!r} does not copy {binary}"
        assert port in exposed, f"Dockerfile: the default stage {last!r} does not EXPOSE {binary}'s port {port}"
    assert copied == bins, f"Dockerfile: the default stage copies {sorted(copied - bins)}, which the workspace does not build"
    assert exposed == set(ports.values()), f"Dockerfile: the default stage exposes {sorted(exposed - set(ports.values()))}, no exporter's port"
    cmd = next(rest for word, rest in s[last] if word == "CMD")
    assert json.loads(cmd)[0].rsplit("/", 1)[1] in bins
    # One stage per exporter, its binary as entrypoint and its port exposed.
    for binary, port in ports.items():
        stage_name = binary.replace("_", "-")
        assert stage_name in s, f"Dockerfile: no stage {stage_name!r} for {binary}"
        stage = s[stage_name]
        assert copied_binaries(stage) == {binary}, f"Dockerfile: stage {stage_name!r} must copy {binary} alone"
        assert ("EXPOSE", str(port)) in stage, f"Dockerfile: stage {stage_name!r} does not EXPOSE {port}"
        entry = json.loads(next(rest for word, rest in stage if word == "ENTRYPOINT"))
        assert entry == [f"/usr/local/bin/{binary}"]
    # And the build stage copies out what the workspace builds.
    out = next(rest for word, rest in s["build"] if word == "RUN")
    missing = sorted(b for b in bins if f"target/release/{b}" not in out)
    assert not missing, f"Dockerfile: the build stage does not copy out {missing}"


def test_the_image_runs_as_a_non_root_user_with_oci_labels():
    s = stages()
    runtime = s["runtime"]
    user = next(rest for word, rest in runtime if word == "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    labels = " ".join(rest for word, rest in runtime if word == "LABEL")
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    # Every final stage derives from the runtime stage and keeps its user.
    for name, stage in final_stages().items():
        assert stage[0][1].split()[0] == "runtime", name
        assert not [rest for word, rest in stage if word == "USER"], f"Dockerfile: stage {name!r} changes the user"


def test_the_build_context_leaves_out_build_output_and_tools():
    ignored = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    assert {"target/", ".venv/", ".git/"} <= ignored
    # ...but not what the build needs.
    for needed in ("Cargo.toml", "Cargo.lock", "common/", "exporters/"):
        assert needed not in ignored
