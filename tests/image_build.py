"""Podman for the image tests (tests/test_image.py): storage of the project's own, a
local Debian 12 base image that stands in for distroless (made once per machine and
kept), the Dockerfile's runtime stages built around the test build's binaries, and
exporters run from those images as Kubernetes runs them.

Everything runs as root, with podman's runc runtime and scripts/containers.conf; the
Debian packages (podman, runc, debootstrap) come from scripts/setup.sh. Storage:
$HEADROOM_PODMAN_DIR (default /var/tmp/headroom-podman) keeps the images between runs,
/run/headroom-podman podman's run-time state (cleared at boot, as podman expects); a
user's own podman storage is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterator

import requests

from conftest import ROOT, Endpoint, free_port, terminate, wait_until

DOCKERFILE = ROOT / "Dockerfile"
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
STATE = Path(os.environ.get("HEADROOM_PODMAN_DIR", "/var/tmp/headroom-podman"))
RUN_STATE = Path("/run/headroom-podman")

# The distroless image the Dockerfile's runtime stage is built on in a release
# (gcr.io/distroless/cc-debian12:nonroot) is Debian 12's glibc, libgcc and CA
# certificates (/etc/ssl/certs/ca-certificates.crt), /etc/passwd with the user nonroot
# (65532, home /home/nonroot), and the image configuration of `changes` below: user
# 65532, working directory /home/nonroot, PATH and SSL_CERT_FILE. The stand-in is
# Debian 12 itself (debootstrap's minbase: glibc and libgcc among it) with
# ca-certificates, the same user and the same configuration. Unlike distroless it has a
# shell, so tests/test_docker.py sees to it that the runtime stages run nothing.
SUITE = "bookworm"
BASE_RECIPE = {
    "suite": SUITE,
    "variant": "minbase",
    "include": ["ca-certificates"],
    "passwd": "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
    "group": "nonroot:x:65532:",
    "home": "/home/nonroot",
    # Left out to keep the image small; nothing the exporters read.
    "remove": ["var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"],
    "changes": [
        "USER 65532",
        "WORKDIR /home/nonroot",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ],
}
BASE_REPOSITORY = "localhost/headroom-base/debian12-nonroot"
# A new recipe is a new tag, so a changed recipe builds a new base.
BASE_IMAGE = BASE_REPOSITORY + ":" + hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()[:12]
TEST_REPOSITORY = "localhost/headroom-test"
CONTAINER_PREFIX = "headroom-test-"


def require_podman() -> None:
    """Fails (never skips) when the image tests cannot run here."""
    assert os.geteuid() == 0, "the image tests run podman and debootstrap as root: run the tests as root"
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool) or Path("/usr/sbin", tool).exists(), f"{tool} is not installed: run scripts/setup.sh"


def podman_command(*args: str) -> list[str]:
    return [
        "podman",
        "--root", str(STATE / "storage"),
        "--runroot", str(RUN_STATE / "run"),
        "--tmpdir", str(RUN_STATE / "tmp"),
        "--storage-driver", "overlay",
        *args,
    ]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(podman_command(*args), env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"podman {' '.join(args)} exited with {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock between test sessions (and pytest workers) on this machine."""
    STATE.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def debian_mirror(suite: str = SUITE) -> str:
    """The mirror apt on this machine takes `suite`'s main packages from."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    policy = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True, check=True).stdout
    for line in policy.splitlines():
        # " 500 http://deb.debian.org/debian bookworm/main amd64 Packages"
        parts = line.split()
        if len(parts) == 5 and parts[2] == f"{suite}/main" and parts[3] == arch and parts[4] == "Packages":
            return parts[1]
    raise AssertionError(f"apt has no source for {suite}/main ({arch}): the local base image is made from it (apt-cache policy:\n{policy})")


def base_image() -> str:
    """The local stand-in for distroless, made the first time on this machine (about a
    minute: debootstrap from apt's mirror) and kept in the project's podman storage."""
    with locked("base.lock"):
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs.", dir=STATE))
        log = STATE / "debootstrap.log"
        try:
            debootstrap = [
                shutil.which("debootstrap") or "/usr/sbin/debootstrap",
                f"--variant={BASE_RECIPE['variant']}", "--include=" + ",".join(BASE_RECIPE["include"]),
                SUITE, str(rootfs), debian_mirror(),
            ]
            with open(log, "w") as out:
                r = subprocess.run(debootstrap, stdout=out, stderr=subprocess.STDOUT, timeout=900,
                                   env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
            assert r.returncode == 0, f"debootstrap failed ({r.returncode}); the end of {log}:\n" + "\n".join(log.read_text().splitlines()[-20:])
            for pattern in BASE_RECIPE["remove"]:
                for path in rootfs.glob(pattern):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            with open(rootfs / "etc/passwd", "a") as f:
                f.write(BASE_RECIPE["passwd"] + "\n")
            with open(rootfs / "etc/group", "a") as f:
                f.write(BASE_RECIPE["group"] + "\n")
            home = rootfs / BASE_RECIPE["home"].lstrip("/")
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(home, 65532, 65532)
            changes = [a for c in BASE_RECIPE["changes"] for a in ("--change", c)]
            tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(podman_command("import", *changes, "-", BASE_IMAGE), env=podman_env(), stdin=tar.stdout, capture_output=True, text=True, timeout=600)
            tar.stdout.close()
            assert tar.wait() == 0 and imported.returncode == 0, f"podman import failed:\n{imported.stderr}"
        finally:
            remove_rootfs(rootfs)
        # Older recipes' bases are of no further use.
        listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPOSITORY).stdout.split()
        for old in set(listed) - {BASE_IMAGE}:
            podman("rmi", old, check=False)
        return BASE_IMAGE


def remove_rootfs(rootfs: Path) -> None:
    """Deletes debootstrap's target, after unmounting what a debootstrap that did not
    finish may have left mounted there (/proc, /sys, devices bound from the host)."""
    prefix = str(rootfs.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    left = [m for m in mounts if m.startswith(prefix)]
    assert not left, f"{rootfs} still has file systems mounted ({left}); not deleted"
    shutil.rmtree(rootfs, ignore_errors=True)


def stage_binaries(bin_dir: Path, binaries: list[str], context: Path) -> None:
    """The build context of the Dockerfile's `prebuilt` stage: the test build's binaries
    and nothing else, stripped: without debug information and symbols a debug binary is
    an eighth of its size, which halves the time the builds take. The code and the
    shared libraries it links are the same."""
    context.mkdir(parents=True, exist_ok=True)
    strip = shutil.which("strip")
    for binary in binaries:
        src, dst = bin_dir / binary, context / binary
        assert src.exists(), f"{src} is missing: build the workspace (HEADROOM_BIN_DIR={bin_dir})"
        if strip:
            subprocess.run([strip, "-o", str(dst), str(src)], check=True, timeout=120)
        else:
            shutil.copy2(src, dst)
        dst.chmod(0o755)


def build(target: str, context: Path, tag: str, base: str) -> None:
    """One stage of the Dockerfile as users get it, on the local base, with the
    binaries of `context`."""
    podman(
        "build", "--pull=never", "--file", str(DOCKERFILE), "--target", target,
        "--build-arg", "BINARIES=prebuilt", "--build-arg", f"RUNTIME_IMAGE={base}", "--build-arg", "REVISION=test",
        "--tag", tag, str(context),
        timeout=600,
    )


def inspect_image(tag: str) -> dict:
    return json.loads(podman("image", "inspect", tag).stdout)[0]


class Session:
    """The images of one test session: built with tags of their own, removed at the end."""

    def __init__(self, workdir: Path) -> None:
        require_podman()
        (RUN_STATE / "run").mkdir(parents=True, exist_ok=True)
        (RUN_STATE / "tmp").mkdir(parents=True, exist_ok=True)
        self.run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.tags: list[str] = []
        # Held shared while the session lasts; whoever finds it free at the end clears
        # what crashed sessions left behind.
        STATE.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(STATE / "sessions.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_SH)
        self.base = base_image()

    def build(self, targets: list[str], bin_dir: Path, binaries: list[str]) -> dict[str, str]:
        context = self.workdir / "context"
        stage_binaries(bin_dir, binaries, context)
        tags = {}
        for target in targets:
            tag = f"{TEST_REPOSITORY}/{target}:{self.run_id}"
            self.tags.append(tag)
            build(target, context, tag, self.base)
            tags[target] = tag
        return tags

    def close(self) -> None:
        if self.tags:
            podman("rmi", "--force", *self.tags, check=False)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another session is running; it cleans up after both
        else:
            stale = podman("ps", "--all", "--quiet", "--filter", f"name=^{CONTAINER_PREFIX}", check=False).stdout.split()
            if stale:
                podman("rm", "--force", *stale, check=False)
            left = podman("images", "--format", "{{.ID}}", "--filter", f"reference={TEST_REPOSITORY}/*", check=False).stdout.split()
            if left:
                podman("rmi", "--force", *sorted(set(left)), check=False)
            # The intermediate images of the builds (the prebuilt binaries).
            podman("image", "prune", "--force", check=False)
        finally:
            os.close(self._lock)


def resolve(root: Path, path: str) -> Path:
    """`path` inside the image's file system at `root`, symbolic links followed there."""
    current = PurePosixPath("/")
    parts = list(PurePosixPath(path).parts[1:])
    for _ in range(64):
        if not parts:
            return root / str(current).lstrip("/")
        part = parts.pop(0)
        candidate = current / part if part != ".." else current.parent
        host = root / str(candidate).lstrip("/")
        if host.is_symlink():
            target = PurePosixPath(os.readlink(host))
            parts = list(target.parts[1:] if target.is_absolute() else target.parts) + parts
            current = PurePosixPath("/") if target.is_absolute() else current
        else:
            current = candidate
    raise AssertionError(f"{path}: too many symbolic links in the image")


@contextlib.contextmanager
def mounted(tag: str) -> Iterator[Path]:
    """The image's file system, read on the host."""
    path = Path(podman("image", "mount", tag).stdout.strip())
    try:
        yield path
    finally:
        podman("image", "unmount", tag, check=False)


class Container(Endpoint):
    """An exporter run from an image the way the Helm chart runs it: the image's own
    user, a read-only root file system (no tmpfs anywhere), no capabilities, no
    privilege escalation, the configuration mounted read-only at
    /etc/headroom/config.yml; on the host's network, listening on a free loopback port."""

    def __init__(self, image: str, args: list[str], workdir: Path, *, entrypoint: list[str] | None = None,
                 env: dict[str, str] | None = None, mounts: dict[Path, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"{CONTAINER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        options = [
            "run", "--rm", "--name", self.name, "--pull=never", "--network=host",
            "--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        ]
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        for src, dst in (mounts or {}).items():
            options += ["--volume", f"{src}:{dst}:ro"]
        if entrypoint is not None:
            options += ["--entrypoint", json.dumps(entrypoint)]
        self.log_path = workdir / f"{self.name}.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            podman_command(*options, image, *args, f"--web.listen-address=127.0.0.1:{self.port}"),
            env=podman_env(), stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self.healthy, 60, f"{image} to serve /healthz")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the container exited with {self.proc.returncode}: {self.logs()}")
        return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def logs(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def process(self) -> dict[str, str]:
        """The exporter process's /proc/<pid>/status, and its executable as the
        container sees it."""
        pid = podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        status = {k: v.strip() for k, v in status.items()}
        status["exe"] = os.readlink(f"/proc/{pid}/exe")
        return status

    def stop(self) -> int:
        """SIGTERM as Kubernetes sends it, SIGKILL after 10 s; the container's exit code."""
        if self.log_file.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            podman("stop", "--time", "10", self.name, timeout=60, check=False)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate(self.proc, 10)
        self.log_file.close()
        return self.proc.returncode
