"""Flows for the Prefect integration's tests (importable by the processor, by
``serve``'s flow-run processes and by the tests: ``tests.engines.prefect_flows``).

Every flow carries the default :data:`dead_letter_hook` (settings from the
environment, as in a user's project); a test binds its own queue with
``flow.with_options(on_failure=[hook])``. The flaky flows keep their call count
in a file, so "fails the first N times" holds across processes (a deployment's
runs each run in a new process).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from mahavishnu_dlq.integrations.prefect import dead_letter_hook


def _call(counter: str) -> int:
    """Count one more call in the file ``counter``; the count including this call."""
    path = Path(counter)
    calls = int(path.read_text() or "0") + 1 if path.exists() else 1
    path.write_text(str(calls))
    return calls


@flow(name="network-down", on_failure=[dead_letter_hook])
def network_down(host: str, port: int = 443) -> None:
    """Always fails the way a dead peer does."""
    raise ConnectionError(f"connection to {host}:{port} reset by peer")


@flow(name="flaky-flow", on_failure=[dead_letter_hook], retries=1, retry_delay_seconds=0)
def flaky(counter: str, fail_times: int) -> int:
    """Fails its first ``fail_times`` calls (Prefect retries it once itself), then
    returns the call number."""
    calls = _call(counter)
    if calls <= fail_times:
        raise TimeoutError(f"upstream timed out (call {calls})")
    return calls


@flow(name="async-flaky", on_failure=[dead_letter_hook])
async def async_flaky(counter: str, fail_times: int) -> int:
    """The async twin of :func:`flaky` (no Prefect retries)."""
    calls = _call(counter)
    if calls <= fail_times:
        raise ConnectionRefusedError(f"connection refused (call {calls})")
    return calls


@flow(name="succeeds", on_failure=[dead_letter_hook])
def succeeds(value: int) -> int:
    """Never fails: never stored."""
    return value * 2


class Order(BaseModel):
    """A typed flow parameter: stored as JSON, turned back into an Order on replay."""

    order_id: int
    amount: float


@flow(name="charge", on_failure=[dead_letter_hook])
def charge(order: Order, counter: str) -> float:
    """Fails on its first call; checks that a replay passes a real Order."""
    if not isinstance(order, Order):
        raise TypeError(f"expected an Order, got {type(order).__name__}")
    if _call(counter) == 1:
        raise ConnectionResetError("payment gateway reset the connection")
    return order.amount


@flow(name="takes-anything", on_failure=[dead_letter_hook])
def takes_anything(value: object) -> None:
    """Fails with whatever it was given (an object with no JSON form, in a test)."""
    raise ValueError(f"cannot use {type(value).__name__}")


@flow(name="deployed-flaky", on_failure=[dead_letter_hook])
def deployed_flaky(counter: str, fail_times: int) -> int:
    """Served as the deployment ``deployed-flaky/dlq-test`` by a test's runner process."""
    calls = _call(counter)
    if calls <= fail_times:
        raise ConnectionError(f"warehouse unreachable (call {calls})")
    return calls


def serve() -> None:
    """The test's runner process: serve ``deployed-flaky/dlq-test`` until ended."""
    deployed_flaky.serve(name="dlq-test", print_starting_message=False)
