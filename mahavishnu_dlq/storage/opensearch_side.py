"""The small indexes an OpenSearch store keeps beside its tasks: ``<index>-jobs`` and
``<index>-controls``.

Both are made the same way, so it is written once here: a strict mapping on one
shard, a composable template matching exactly the index (so one re-created by a
write is strict too), the index created at ``open()``; an existing index that maps a
field otherwise is refused with a :class:`~mahavishnu_dlq.errors.ConfigurationError`
naming it and what it holds, one that lacks a field is completed in place; and
``drop()`` deletes the index and its template.

A store opened for reading (``open(create=False)``) creates neither: a read of a
missing side index answers empty, and the first write makes it (:class:`Ensured`:
the template, then the index, once per store), so a read-only console can still
start a bulk job. Putting the template first matters: a write to a missing index
makes OpenSearch create it, and only the template makes that one strict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.storage.opensearch_client import Connection
from mahavishnu_dlq.storage.opensearch_query import shard_settings

__all__ = ["Ensured", "SideIndex"]


@dataclass(frozen=True)
class SideIndex:
    """One side index of the tasks index ``tasks_index`` (see the module docstring)."""

    tasks_index: str
    suffix: str  #: "jobs", "controls"
    properties: dict[str, dict[str, Any]]
    version: int  #: kept in ``_meta``; versions only ever add fields
    holds: str  #: what it holds, for the refusal: "bulk jobs"
    replicas: int | None = None  #: as the tasks index's (``opensearch.number_of_replicas``)

    @property
    def name(self) -> str:
        return f"{self.tasks_index}-{self.suffix}"

    @property
    def template(self) -> str:
        return f"mahavishnu-dlq-{self.name}"

    def mappings(self) -> dict[str, Any]:
        return {
            "dynamic": "strict",
            "_meta": {f"mahavishnu_dlq_{self.suffix}_mapping_version": self.version},
            "properties": self.properties,
        }

    def body(self) -> dict[str, Any]:
        return {"settings": shard_settings(1, self.replicas), "mappings": self.mappings()}

    def conflicts(self, mappings: dict[str, Any]) -> tuple[list[str], bool]:
        """The fields an existing index maps otherwise than we do, and whether it lacks
        some (then its mapping is completed in place)."""
        properties = mappings.get("properties") or {}
        conflicts: list[str] = []
        for name, wanted in self.properties.items():
            have = properties.get(name)
            if have is not None and have.get("type", "object") != wanted["type"]:
                conflicts.append(f"field {name!r} is mapped as {have.get('type', 'object')!r}")
            elif have is not None and wanted.get("enabled") is False and have.get("enabled", True):
                conflicts.append(f"field {name!r} is an indexed object, expected 'enabled: false'")
        return conflicts, any(name not in properties for name in self.properties)

    async def ensure(self, conn: Connection) -> None:
        """Put the template and create the index (idempotent)."""
        indices = conn.client.indices
        template = {
            "index_patterns": [self.name],
            "priority": 200,
            "template": self.body(),
            "_meta": {"managed_by": "mahavishnu-dlq"},
        }
        with conn.translated(f"open {self.suffix}"):
            await indices.put_index_template(name=self.template, body=template)
            made = await indices.create(index=self.name, body=self.body(), ignore=(400,))
            if conn.created(made, f"open {self.suffix}"):
                return
            found = await indices.get_mapping(index=self.name)
            for name, entry in found.items():
                conflicts, missing = self.conflicts(entry.get("mappings") or {})
                if conflicts:
                    raise ConfigurationError(
                        f"OpenSearch index {name!r} (the {self.holds} of index "
                        f"{self.tasks_index!r}) has a mapping mahavishnu-dlq cannot use: "
                        + "; ".join(conflicts)
                        + f". Delete it (it holds {self.holds} only) or use another "
                        "opensearch.index.",
                        field="opensearch.index",
                    )
                if missing:
                    await indices.put_mapping(index=name, body=self.mappings())

    async def drop(self, conn: Connection) -> None:
        """Delete the index and its template."""
        with conn.translated(f"drop {self.suffix}"):
            await conn.client.indices.delete(index=self.name, ignore=(404,))
            await conn.client.indices.delete_index_template(name=self.template, ignore=(404,))


class Ensured:
    """Whether a store made its side index (and template) yet: :meth:`ensure` at
    ``open()``, :meth:`before_write` on every write path (a no-op once made)."""

    def __init__(self, side: SideIndex, conn: Connection) -> None:
        self._side = side
        self._conn = conn
        self._done = False

    async def ensure(self) -> None:
        """Put the template and create the index now (idempotent)."""
        await self._side.ensure(self._conn)
        self._done = True

    async def before_write(self) -> None:
        """Make the index unless this store made it already."""
        if not self._done:
            await self.ensure()

    async def drop(self) -> None:
        """Delete the index and its template; the next write makes them again."""
        self._done = False
        await self._side.drop(self._conn)
