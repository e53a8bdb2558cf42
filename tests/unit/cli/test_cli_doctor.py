"""``mahavishnu-dlq doctor`` on the local stores: one line per check, the exit status,
``--json``, and settings that cannot be loaded (the OpenSearch checks:
``tests/integration/test_doctor.py``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.unit.cli.conftest import Cli


def _make_sqlite(path: Path) -> None:
    async def make() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    anyio.run(make)


def test_memory_is_one_line_and_exit_0(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    ran = cli("doctor")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].startswith("warn ")
    assert "store: memory store: nothing persists" in lines[0]
    assert lines[1:] == ["0 ok, 1 warning(s), 0 failed"]


def test_sqlite_prints_every_check_and_exits_0(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "dlq.sqlite3"
    _make_sqlite(path)
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "sqlite")
    monkeypatch.setenv("MAHAVISHNU_DLQ_SQLITE__PATH", str(path))
    ran = cli("doctor")
    assert ran.code == 0, ran.err
    assert ran.err == ""
    lines = ran.out.splitlines()
    names = [line[5:].split(":", 1)[0] for line in lines[:-1]]
    assert names == ["settings", "file", "writable", "schema", "journal mode", "disk"]
    assert all(line.startswith("ok   ") for line in lines[:-2]), ran.out  # disk may warn
    assert lines[-1].startswith("6 ok") or lines[-1].startswith("5 ok"), lines[-1]


def test_a_failed_check_exits_1_and_json_tells_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "sqlite")
    monkeypatch.setenv("MAHAVISHNU_DLQ_SQLITE__PATH", str(tmp_path))  # a directory
    ran = cli("doctor")
    assert ran.code == 1
    assert any(line.startswith("FAIL file:") for line in ran.out.splitlines()), ran.out
    data = cli("doctor", "--json")
    assert data.code == 1
    shown = data.json()
    assert shown["store"] == "sqlite"
    assert shown["ok"] is False
    assert shown["counts"] == {"ok": 1, "warn": 0, "fail": 1, "skip": 0}
    assert [c["name"] for c in shown["checks"]] == ["settings", "file"]
    assert set(shown["checks"][1]) == {"name", "status", "detail", "fix"}


def test_settings_that_cannot_be_loaded_exit_2(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "bogus")
    ran = cli("doctor")
    assert ran.code == 2
    assert "store" in ran.one_error_line()


def test_doctor_creates_no_sqlite_file(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "later" / "dlq.sqlite3"
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "sqlite")
    monkeypatch.setenv("MAHAVISHNU_DLQ_SQLITE__PATH", str(path))
    ran = cli("doctor")
    assert ran.code == 0, ran.out + ran.err
    assert "does not exist yet" in ran.out
    assert not (tmp_path / "later").exists()
