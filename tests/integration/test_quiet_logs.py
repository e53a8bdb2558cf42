"""A normal run logs nothing at WARNING or above, from any logger; a fault warns once.

"Normal" is what a queue does every day on a healthy node: open an index that exists,
enqueue (and enqueue again), read an id that is not there, refuse enqueues at
``max_size``, list, count, take statistics, claim and retry, run a bulk job, read
the side indexes from a read-only open, and re-sync a journal a previous process
left. None of it may write a WARNING into the host's logs — neither ours nor
opensearch-py's, which logs one for every non-2xx answer it was not told to expect
(the 404 of a missing document, the 400 of an index that exists).

Every record of every logger is captured: a handler on the root logger at DEBUG,
every logger's level and ``disabled`` flag reset for the test (the CLI's tests raise
opensearch-py's logger to ERROR), a handler of its own on each logger that does not
propagate (at WARNING: opensearch-py's request tracer writes whole bodies below it),
and Python warnings recorded. The capture is checked to see opensearch-py's
own lines (its INFO line per request), so a silent test means a quiet run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.errors import QueueFullError
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.testing import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


class Captured(logging.Handler):
    """Every record handed to it, and the Python warnings raised meanwhile."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.warned: list[warnings.WarningMessage] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def loud(self) -> list[str]:
        """WARNING and above, and Python warnings, one line each."""
        lines = [
            f"{r.levelname} {r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.WARNING
        ]
        return lines + [f"{w.category.__name__}: {w.message}" for w in self.warned]

    def clear(self) -> None:
        self.records.clear()
        self.warned.clear()


@contextlib.contextmanager
def every_log() -> Iterator[Captured]:
    """Capture every logger's records at DEBUG (see the module), restoring all after."""
    captured = Captured()
    root = logging.getLogger()
    loggers = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    saved_root, saved_disable = root.level, logging.root.manager.disable
    own_handler = [logger for logger in loggers if not logger.propagate]
    logging.disable(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.addHandler(captured)
    for logger in loggers:
        logger.setLevel(logging.NOTSET)  # DEBUG, from the root
        logger.disabled = False
    for logger in own_handler:  # opensearch-py's tracer: its lines are DEBUG and INFO
        logger.setLevel(logging.WARNING)
        logger.addHandler(captured)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            captured.warned = warned
            yield captured
    finally:
        root.removeHandler(captured)
        for logger in own_handler:
            logger.removeHandler(captured)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
        root.setLevel(saved_root)
        logging.disable(saved_disable)


def closed_port() -> int:
    """A loopback port nothing listens on (taken, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def answered(handler: Captured) -> None:
    """The capture saw opensearch-py's own lines: a quiet run is no deaf capture."""
    names = {r.name for r in handler.records}
    assert "opensearch" in names, sorted(names)


@pytest.fixture
def index_name() -> str:
    return f"dlq-quiet-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def existing(opensearch_url: str, index_name: str) -> AsyncIterator[str]:
    """An index (with its side indexes) made by an earlier start; dropped after."""
    first = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await first.open()
    await first.close()
    try:
        yield index_name
    finally:
        last = OpenSearchStore(hosts=[opensearch_url], index=index_name)
        await last.drop()
        await last.close()


async def test_a_normal_run_on_opensearch_logs_nothing_at_warning(
    opensearch_url: str, existing: str
) -> None:
    clock = FakeClock()
    calls: list[str] = []

    def handler(task: dict[str, Any], repos: list[str]) -> None:
        calls.append(str(task["n"]))
        if len(calls) == 1:
            raise ConnectionError("flaky once")  # retried later: not exhausted

    with every_log() as logs:
        store = OpenSearchStore(hosts=[opensearch_url], index=existing)
        dlq = DeadLetterQueue(store, max_size=4, clock=clock)
        dlq.register_handler("quiet", handler)
        await dlq.connect()  # the index, template and side indexes exist: 400s expected
        for n in range(3):
            await dlq.enqueue(f"t{n}", {"n": n}, error=ConnectionError("down"), workflow="quiet")
        await dlq.enqueue("t0", {"n": 0}, error=ConnectionError("again"), workflow="quiet")
        assert await dlq.get_task("no-such-task") is None  # a 404
        await dlq.enqueue("t3", {"n": 3}, error=ConnectionError("down"), workflow="quiet")
        for n in range(2):  # the queue-full check, twice
            with pytest.raises(QueueFullError):
                await dlq.enqueue(f"over{n}", {"n": n}, error="boom", workflow="quiet")
        assert len(await dlq.list_tasks()) == 4
        assert await dlq.count_tasks() == 4
        assert (await dlq.get_statistics())["total_stored"] == 4
        processor = RetryProcessor(dlq)
        for _ in range(4):  # claims, retries, one failure rescheduled, completions
            clock.advance(timedelta(hours=1))
            await processor.run_once()
        assert len(calls) == 5
        job = await dlq.start_job("archive", dry_run=True)
        assert (await dlq.get_job(job.job_id)).job_id == job.job_id
        await dlq.stop()
        reader = OpenSearchStore(hosts=[opensearch_url], index=existing)
        await reader.open(create=False)
        try:
            assert await reader.jobs.get("no-such-job") is None
            assert await reader.controls.get("no-such-control") is None
            assert [key for key, _ in await reader.controls.list("breaker/")] == ["breaker/quiet"]
        finally:
            await reader.close()
    assert logs.loud() == []
    answered(logs)


async def test_a_resync_of_a_journal_left_by_an_outage_logs_nothing_at_warning(
    opensearch_url: str, index_name: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    down = OpenSearchStore(hosts=[f"http://127.0.0.1:{closed_port()}"], index=index_name)
    outage = DeadLetterQueue(FailoverStore(down, JournalStore(journal), timeout=2.0))
    await outage.connect()  # the fault part: it may warn (it does), and is not asserted
    for n in range(5):
        await outage.enqueue(f"j{n}", {"n": n}, error="boom")
    await outage.stop()  # the changes stay in the journal for the next process

    with every_log() as logs:
        failover = FailoverStore(
            OpenSearchStore(hosts=[opensearch_url], index=index_name), JournalStore(journal)
        )
        dlq = DeadLetterQueue(failover)
        await dlq.connect()
        assert failover.pending_resync == 5
        assert await failover.probe() is True  # the re-sync
        assert failover.pending_resync == 0
        await dlq.enqueue("after", {"n": 9}, error="boom")
        assert await dlq.get_task("no-such-task") is None
        assert await dlq.count_tasks() == 6
        await dlq.stop()
    try:
        assert logs.loud() == []
        answered(logs)
    finally:
        cleanup = OpenSearchStore(hosts=[opensearch_url], index=index_name)
        await cleanup.drop()
        await cleanup.close()


class Gate:
    """A TCP proxy in front of the node that can be shut (new connections refused, open
    ones cut) and opened again on the same port: an outage, and its end."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shut(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_an_outage_warns_once_as_it_starts_and_its_end_is_info(
    opensearch_url: str, index_name: str
) -> None:
    gate = Gate(opensearch_url)
    await gate.open()
    primary = OpenSearchStore(hosts=[gate.url], index=index_name, timeout=2.0)
    failover = FailoverStore(primary, MemoryStore(), failure_threshold=2, timeout=2.0)
    dlq = DeadLetterQueue(failover)
    await dlq.connect()
    try:
        with every_log() as logs:
            await gate.shut()
            for n in range(6):  # two failures open the circuit; then the fallback serves
                await dlq.enqueue(f"o{n}", {"n": n}, error="boom")
            assert failover.health["serving"] == "fallback"
            for _ in range(3):  # the probe asks the node again and again
                assert await failover.probe() is False
            assert await dlq.get_task("o0") is not None
            during = logs.loud()
            await gate.open()
            assert await failover.probe() is True
            after = logs.loud()
            back = [r for r in logs.records if "is back" in r.getMessage()]
        assert len(during) == 1, during  # once per state change, not per call or probe
        assert during[0].startswith("WARNING mahavishnu_dlq.storage.failover: dlq.failover:")
        assert "serving from the fallback" in during[0]
        assert after == during  # the recovery adds no warning …
        assert [r.levelno for r in back] == [logging.INFO]  # … but an INFO line
        failed = [r for r in logs.records if r.name == "opensearch" and "N/A" in r.getMessage()]
        assert failed  # opensearch-py's lines of the failed requests: there, at DEBUG
        assert {r.levelno for r in failed} == {logging.DEBUG}
        assert await dlq.count_tasks() == 6
    finally:
        await dlq.stop()
        await gate.shut()
        cleanup = OpenSearchStore(hosts=[opensearch_url], index=index_name)
        await cleanup.drop()
        await cleanup.close()
