"""Stored rows back into entries: the columns an entry is read from, and the rows an incremental scan
compares against and reuses."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..model import IndexEntry, new_entry

# a row is ENTRY_COLUMNS (then meta_json) in this order: row_entry and StoredRows read it by position
JOINS = "FROM checkpoints c JOIN runs r ON r.id = c.run_id JOIN roots o ON o.id = r.root_id"
ENTRY_COLUMNS = (
    "c.id, c.path, r.path, o.path, c.layout, c.format, c.framework, c.step, c.epoch, c.size_bytes, "
    "c.n_tensors, c.n_params, c.has_optimizer, c.has_scheduler, c.has_rng_state, c.safe, c.unsafe_globals, "
    "c.status, c.reason, c.mtime, c.fingerprint, c.link_to"
)


class StoredRows:
    """One root's stored checkpoints, as an incremental scan needs them: `get(path)` gives the stored
    (fingerprint, status) to decide whether a checkpoint is reused, `entry(path, files)` the IndexEntry of
    one that is. `files` are the parts as the scan has just seen them: a reused checkpoint's fingerprint
    matches, so they are the stored ones, and the files table is not read."""

    def __init__(
        self, rows: list[tuple[Any, ...]], metrics: dict[int, dict[str, float]], version: tuple[int, int]
    ) -> None:
        self._rows = {r[1]: r for r in rows}
        self._metrics = metrics
        self.version = version

    def __len__(self) -> int:
        return len(self._rows)

    def paths(self) -> Iterable[str]:
        return self._rows.keys()

    def get(self, path: str) -> tuple[str, str] | None:
        r = self._rows.get(path)
        return None if r is None else (r[20], r[17])

    def entry(self, path: str, files: Iterable[tuple[str, int, int]]) -> IndexEntry:
        r = self._rows[path]
        files = tuple(files)
        return row_entry(r, self._metrics.get(r[0], {}), tuple(sorted(files)) if len(files) > 1 else files)


def row_entry(
    r: tuple[Any, ...], metrics: dict[str, float], files: tuple[tuple[str, int, int], ...]
) -> IndexEntry:
    """An entry from a row of `ENTRY_COLUMNS` followed by `meta_json`."""
    epoch = r[8]
    if isinstance(epoch, float) and epoch.is_integer():
        epoch = int(epoch)
    unsafe = r[16]
    # flags inline, not through a helper: four per row, thousands of rows
    return new_entry(
        {
            "path": r[1],
            "run": r[2],
            "root": r[3],
            "layout": r[4],
            "format": r[5],
            "framework": r[6],
            "step": r[7],
            "epoch": epoch,
            "size_bytes": r[9],
            "n_tensors": r[10],
            "n_params": r[11],
            "metrics": metrics,
            "has_optimizer": None if r[12] is None else r[12] != 0,
            "has_scheduler": None if r[13] is None else r[13] != 0,
            "has_rng_state": None if r[14] is None else r[14] != 0,
            "safe": None if r[15] is None else r[15] != 0,
            "unsafe_globals": tuple(json.loads(unsafe)) if unsafe != "[]" else (),
            "status": r[17],
            "reason": r[18],
            "mtime": r[19],
            "fingerprint": r[20],
            "files": files,
            "meta": json.loads(r[22]) if r[22] else None,
            "link_to": r[21],
        }
    )
