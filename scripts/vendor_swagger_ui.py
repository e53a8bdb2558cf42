"""Copy the Swagger UI assets the console's API docs page serves into the package.

The page at ``/api/v1/docs`` loads Swagger UI from the package itself (no CDN):
``mahavishnu_dlq/web/static/vendor/swagger-ui/`` holds ``swagger-ui-bundle.js``,
``swagger-ui.css`` and the licence files of the npm package ``swagger-ui-dist``
at the pinned :data:`VERSION`. This script reproduces that copy: it runs
``npm pack swagger-ui-dist@VERSION`` in a temporary directory (no install
scripts run), checks the tarball's integrity and each file's SHA-256 against the
sums recorded here, and writes the files. ``--check`` only verifies the files in
the package against the sums (no network).

To move to another version: change :data:`VERSION`, run with ``--print-sums``,
look at what changed upstream, record the new sums, run again.

    python scripts/vendor_swagger_ui.py              fetch, verify, copy
    python scripts/vendor_swagger_ui.py --check      verify the copied files
    python scripts/vendor_swagger_ui.py --print-sums fetch and print the sums
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "5.36.0"
#: ``integrity`` of the npm tarball (what the registry publishes for this version).
TARBALL_INTEGRITY = (
    "sha512-"
    "Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A=="
)
#: The files copied (the package's ``package/<name>``) and their SHA-256.
FILES = {
    "swagger-ui-bundle.js": "b164c5a22535e40dae08c00271674a67e437ec195098c55fcedf8ffac7ac3c88",
    "swagger-ui.css": "7eb9f5a125e4bc9b3f0b71869b66d1a3d7c501f972f53d44ef91c2ae6c5bda5e",
    # Apache-2.0: the licence and NOTICE go with every copy; the bundle's own
    # third-party notices are in its LICENSE.txt (the bundle's first line names it)
    "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
    "swagger-ui-bundle.js.LICENSE.txt": (
        "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb"
    ),
}
TARGET = (
    Path(__file__).resolve().parent.parent
    / "mahavishnu_dlq"
    / "web"
    / "static"
    / "vendor"
    / "swagger-ui"
)


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fetch(workdir: Path) -> Path:
    """``npm pack`` the pinned version into ``workdir``; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to fetch swagger-ui-dist (the npm registry's client)")
    subprocess.run(  # noqa: S603 - a fixed command, the version is a constant
        [npm, "pack", f"swagger-ui-dist@{VERSION}", "--ignore-scripts", "--silent"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarball = workdir / f"swagger-ui-dist-{VERSION}.tgz"
    if not tarball.is_file():
        raise SystemExit(f"npm pack did not write {tarball.name}")
    algorithm, _, expected = TARBALL_INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{tarball.name}: integrity {algorithm}-{digest} is not the recorded one")
    return tarball


def read_members(tarball: Path) -> dict[str, bytes]:
    """The bytes of each file of :data:`FILES` in the tarball (nothing is extracted)."""
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for name in FILES:
            member = archive.getmember(f"package/{name}")
            if not member.isfile():
                raise SystemExit(f"package/{name} is not a regular file")
            stream = archive.extractfile(member)
            if stream is None:
                raise SystemExit(f"package/{name} cannot be read")
            found[name] = stream.read()
    return found


def verify(contents: dict[str, bytes]) -> list[str]:
    """Problems with ``contents`` against :data:`FILES` (empty when all match)."""
    problems = []
    for name, expected in FILES.items():
        data = contents.get(name)
        if data is None:
            problems.append(f"{name}: missing")
        elif sha256(data) != expected:
            problems.append(f"{name}: sha256 {sha256(data)} is not the recorded {expected}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Fetch, verify and copy (or only check, or print the sums)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify the copied files only")
    mode.add_argument("--print-sums", action="store_true", help="fetch and print the sums")
    args = parser.parse_args(argv)
    if args.check:
        present = {name: (TARGET / name).read_bytes() for name in FILES if (TARGET / name).exists()}
        problems = verify(present)
        for problem in problems:
            sys.stderr.write(f"{problem}\n")
        return 1 if problems else 0
    with tempfile.TemporaryDirectory() as tmp:
        contents = read_members(fetch(Path(tmp)))
    if args.print_sums:
        for name, data in contents.items():
            sys.stdout.write(f'    "{name}": "{sha256(data)}",\n')
        return 0
    problems = verify(contents)
    if problems:
        for problem in problems:
            sys.stderr.write(f"{problem}\n")
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for stale in TARGET.iterdir():
        if stale.name not in FILES:
            stale.unlink()
    for name, data in contents.items():
        (TARGET / name).write_bytes(data)
    sys.stdout.write(f"swagger-ui-dist {VERSION}: {len(contents)} files in {TARGET}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
