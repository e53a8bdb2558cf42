"""The console under test and the selections of its timed requests, shared by
``benchmarks.bench_web`` and :mod:`benchmarks._web_parts`: :class:`Console` (the
app, its queue and an HTTP client that calls it in-process) and :class:`Filters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from benchmarks._web_common import Bare, CorpusClock, Touch
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import TaskFilter

__all__ = ["Console", "Filters"]


@dataclass
class Console:
    """The app under test, its queue and an HTTP client that calls it in-process."""

    dlq: DeadLetterQueue
    http: httpx.AsyncClient
    bare: Bare
    clock: CorpusClock
    touch: Touch

    async def get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        response = await self.http.get(path, params=params)
        if response.status_code != 200:
            raise SystemExit(f"GET {path} {params}: {response.status_code} {response.text[:500]}")
        return response


@dataclass
class Filters:
    """The selections of the timed requests, as the routes and the bare client see them."""

    since: datetime
    listed: TaskFilter  # status + workflow + since
    text: TaskFilter  # status + text
    open: TaskFilter
