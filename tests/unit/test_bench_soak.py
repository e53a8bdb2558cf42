"""The soak benchmark (``benchmarks/bench_soak.py``) runs: two seconds on the memory
store through its function API, with a queue small enough to fill, and its rows and
totals add up. Real time: the soak is a benchmark of real time (rates, RSS)."""

from __future__ import annotations

import pytest

from benchmarks.bench_soak import HEADERS, SoakConfig, queue_for, soak
from mahavishnu_dlq.storage import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Real time on one backend is enough for a smoke test (asyncio, as the CLI runs)."""
    return "asyncio"


async def test_a_two_second_soak_on_memory_prints_its_rows_and_its_counts_add_up() -> None:
    config = SoakConfig(
        seconds=2.0,
        interval=0.5,
        producers=5,
        rate=50.0,  # 250 enqueues/s in all
        max_size=30,  # exhausted tasks fill it within a second: refusals
        step=0.05,
        keep=0.5,
        keep_exhausted=1.0,
        concurrency=10,
    )
    lines: list[str] = []
    dlq = queue_for(MemoryStore(), config)
    result = await soak(dlq, config, out=lines.append)

    assert len(result.rows) == 4  # one per interval, on a fixed schedule
    header = lines[0].splitlines()
    assert [cell.strip() for cell in header[0].strip("|").split("|")] == HEADERS
    assert len(lines) == 1 + len(result.rows)  # the header, then each row as it came
    assert all(line.count("|") == len(HEADERS) + 1 for line in lines[1:])
    assert result.rows[-1].elapsed >= config.seconds - 0.01

    # every enqueue offered was stored or refused; the queue did fill up
    assert result.failed == 0
    assert result.offered == result.enqueued + result.refused
    assert result.refused > 0
    assert result.rows[-1].refused <= result.refused
    assert max(row.open for row in result.rows) <= config.max_size
    # every handler call returned or raised; the rows' calls are the calls of their time
    assert result.calls == result.succeeded + result.raised
    assert result.raised > 0
    assert result.succeeded > 0
    assert 0 < sum(row.calls for row in result.rows) <= result.calls
    # retries completed and exhausted tasks during the run; the totals only grow
    assert 0 < result.completed <= result.succeeded
    assert result.exhausted > 0
    for before, after in zip(result.rows, result.rows[1:], strict=False):
        assert before.exhausted <= after.exhausted
        assert before.completed <= after.completed
        assert before.elapsed < after.elapsed
    # retention (run by the processor as jobs) archived old exhausted tasks and purged
    # old completed ones: the stored set stayed bounded
    assert result.archived > 0
    assert result.purged > 0
    assert await dlq.store.count() <= result.enqueued - result.purged
    # RSS sampled at half time and at the end (Linux's /proc/self/status)
    assert result.rss_half_mib is not None
    assert result.rss_end_mib is not None
    assert result.growth_mib == pytest.approx(result.rss_end_mib - result.rss_half_mib)
