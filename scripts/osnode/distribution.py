"""The OpenSearch distribution (fetched by mvn, unpacked into a cache) and the JDK."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .common import CACHE_ENV, VERSION_ENV, NodeError, _say, _tool, _UnresolvedError

GROUP_ID = "org.opensearch.distribution.integ-test-zip"
ARTIFACT_ID = "opensearch"
SECURITY_ARTIFACT = "org.opensearch.plugin:opensearch-security"
# `ensure` stops at the first one that mvn resolves. 2.19.4 first: the newest 2.19 for which
# the security plugin resolves too (opensearch-security 2.19.4.0; 2.19.6.0 is not served),
# so the plain and the secured node run one version.
CANDIDATE_VERSIONS: tuple[str, ...] = (
    "2.19.4",
    "2.19.6",
    "2.19.5",
    "2.19.3",
    "2.19.2",
    "2.19.1",
    "2.19.0",
)
JAVA_MIN, JAVA_MAX = 11, 23
COMPLETE_MARKER = ".mahavishnu-dlq-complete"
SECURED_SUFFIX = "-security"


def cache_root() -> Path:
    """Where versions are unpacked: ``$MAHAVISHNU_DLQ_OPENSEARCH_CACHE`` or the default."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "mahavishnu-dlq" / "opensearch"


def _is_installed(home: Path) -> bool:
    return (home / COMPLETE_MARKER).is_file() and (home / "bin" / "opensearch").is_file()


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialize `ensure` across processes (pytest-xdist workers, parallel shells)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unzip(archive: Path, dest: Path) -> None:
    """Extract with read-only, world-readable modes, keeping the x bits.

    zipfile drops the Unix modes (bin/ would lose its x bit), and the zip's own modes make
    config/ 0660/0750, unreadable to a node user who does not own the install.
    """
    dest_resolved = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if dest_resolved not in target.parents and target != dest_resolved:
                raise NodeError(f"{archive.name}: entry {info.filename!r} escapes the target")
            zf.extract(info, dest)
            executable = info.is_dir() or (info.external_attr >> 16) & 0o100
            target.chmod(0o755 if executable else 0o644)


def _resolve_zip(artifact: str, into: Path, version: str) -> Path:
    """The zip of ``artifact`` (group:artifact:version:zip), copied by mvn into ``into``."""
    command = [
        _tool("mvn"),
        "-B",
        "-q",
        "dependency:copy",
        f"-Dartifact={artifact}",
        f"-DoutputDirectory={into}",
    ]
    _say(f"resolving {artifact} with mvn ...")
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        command, capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        errors = [line for line in lines if "ERROR" in line] or lines
        raise _UnresolvedError(f"{version}: mvn exit {result.returncode}: {' | '.join(errors[:2])}")
    archives = sorted(into.glob("*.zip"))
    if not archives:
        raise _UnresolvedError(f"{version}: mvn succeeded but left no zip in {into}")
    return archives[0]


def _download(version: str, root: Path) -> Path:
    artifact = f"{GROUP_ID}:{ARTIFACT_ID}:{version}:zip"
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp_name:
        tmp = Path(tmp_name)
        archive = _resolve_zip(artifact, tmp / "zip", version)
        _unzip(archive, tmp / "unpacked")
        unpacked = tmp / "unpacked" / f"opensearch-{version}"
        if not (unpacked / "bin" / "opensearch").is_file():
            raise NodeError(f"{archive.name} has no opensearch-{version}/bin/opensearch")
        (unpacked / COMPLETE_MARKER).write_text(
            json.dumps({"artifact": artifact, "unpacked_at": time.time()}) + "\n"
        )
        final = root / version
        if final.exists():  # an unfinished earlier attempt
            shutil.rmtree(final)
        unpacked.rename(final)
    return final


def ensure_distribution(version: str | None = None) -> Path:
    """Return the unpacked distribution's home, fetching it with mvn the first time.

    Without ``version`` (or ``$MAHAVISHNU_DLQ_OPENSEARCH_VERSION``) it takes the newest
    cached candidate, else downloads the newest candidate that mvn resolves.
    """
    pinned = version or os.environ.get(VERSION_ENV)
    candidates = (pinned,) if pinned else CANDIDATE_VERSIONS
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        for candidate in candidates:
            if _is_installed(root / candidate):
                return root / candidate
        refused: list[str] = []
        for candidate in candidates:
            try:
                home = _download(candidate, root)
            except _UnresolvedError as exc:
                _say(f"not resolved: {exc}")
                refused.append(str(exc))
                continue
            if refused:
                _say(f"refused before {candidate}: {len(refused)} version(s)")
            return home
    raise NodeError("no OpenSearch distribution resolved:\n  " + "\n  ".join(refused))


# --------------------------------------------------------------------------------- java


def _java_major(java_home: Path) -> int | None:
    release = java_home / "release"
    if not release.is_file():
        return None
    for line in release.read_text(errors="replace").splitlines():
        if line.startswith("JAVA_VERSION="):
            parts = line.split("=", 1)[1].strip().strip('"').split(".")
            major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
            return int(major) if major.isdigit() else None
    return None


def find_java_home() -> Path:
    """``OPENSEARCH_JAVA_HOME``, ``JAVA_HOME``, then ``java`` on PATH: first usable one."""
    candidates: list[tuple[str, Path]] = []
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(variable)
        if value:
            candidates.append((variable, Path(value)))
    java = shutil.which("java")
    if java is not None:
        candidates.append(("java on PATH", Path(java).resolve().parent.parent))
    rejected: list[str] = []
    for origin, home in candidates:
        if not os.access(home / "bin" / "java", os.X_OK):
            rejected.append(f"{origin}={home}: no bin/java")
            continue
        major = _java_major(home)
        if major is not None and not JAVA_MIN <= major <= JAVA_MAX:
            rejected.append(f"{origin}={home}: Java {major}, need {JAVA_MIN}-{JAVA_MAX}")
            continue
        if rejected:
            _say(f"skipped JDK(s): {'; '.join(rejected)}")
        return home
    detail = "; ".join(rejected) or "no JAVA_HOME and no java on PATH"
    raise NodeError(f"no usable JDK for OpenSearch 2.x ({detail})")


def ensure_secured_distribution(version: str | None = None) -> Path:
    """The distribution with the security plugin installed, made once beside the plain one
    (``<cache>/<version>-security``): the plugin is
    ``org.opensearch.plugin:opensearch-security:<version>.0``, which must match exactly."""
    home = ensure_distribution(version)
    secured = home.parent / f"{home.name}{SECURED_SUFFIX}"
    with _locked(home.parent / ".lock"):
        if _is_installed(secured):
            return secured
        artifact = f"{SECURITY_ARTIFACT}:{home.name}.0:zip"
        with tempfile.TemporaryDirectory(prefix=".security-", dir=home.parent) as tmp_name:
            tmp = Path(tmp_name)
            try:
                plugin = _resolve_zip(artifact, tmp / "zip", f"{home.name}.0")
            except _UnresolvedError as exc:
                raise NodeError(
                    f"the security plugin for OpenSearch {home.name} did not resolve ({exc}); "
                    f"pin a version for which it does with ${VERSION_ENV}"
                ) from exc
            install = tmp / "install"
            shutil.copytree(home, install, symlinks=True)
            (install / COMPLETE_MARKER).unlink()
            java_home = str(find_java_home())
            env = {
                "PATH": os.environ.get("PATH", ""),
                "JAVA_HOME": java_home,
                "OPENSEARCH_JAVA_HOME": java_home,
            }
            _say(f"installing {artifact} into a copy of {home.name}")
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [
                    str(install / "bin" / "opensearch-plugin"),
                    "install",
                    "--batch",
                    plugin.resolve().as_uri(),
                ],
                capture_output=True,
                text=True,
                check=False,
                env=env,
                timeout=600,
            )
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
                raise NodeError(f"opensearch-plugin install failed: {' | '.join(tail)}")
            for directory, dirs, files in os.walk(install):
                for name in dirs:
                    Path(directory, name).chmod(0o755)
                for name in files:
                    path = Path(directory, name)
                    path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
            (install / COMPLETE_MARKER).write_text(
                json.dumps({"artifact": artifact, "installed_at": time.time()}) + "\n"
            )
            if secured.exists():  # an unfinished earlier attempt
                shutil.rmtree(secured)
            install.rename(secured)
    return secured
