"""Tensor lists shared between checkpoints: checkpoints of one model hold the same tensor list (names,
shapes, dtypes), so the index stores each distinct list once and points checkpoints at it."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from ..model import IndexEntry, TensorMeta

_TENSOR_KEY = itemgetter(0, 1, 2, 3)  # TensorMeta's name, shape, dtype, nbytes: what the index keeps


def tensor_lists(
    db: sqlite3.Connection, entries: list[IndexEntry], tensors: Mapping[str, Sequence[TensorMeta]]
) -> dict[str, int]:
    """path -> the id of its tensor list, for the entries that have tensors. Lists are told apart in memory
    by their content first, so the digest and the lookup happen once per distinct list, not per checkpoint."""
    out: dict[str, int] = {}
    by_content: dict[tuple[Any, ...], int] = {}
    by_digest: dict[str, int] = {}
    shapes: dict[tuple[int, ...], str] = {}  # each distinct shape's JSON
    for e in entries:
        ts = tensors.get(e.path)
        if not ts:
            continue
        key = tuple(map(_TENSOR_KEY, ts))
        lid = by_content.get(key)
        if lid is None:
            items, seen = [], set()
            for i, (name, shape, dtype, nbytes) in enumerate(key):
                if name in seen:  # a name's first occurrence, as the tensors table's primary key kept it
                    continue
                seen.add(name)
                text = shapes.get(shape)
                if text is None:
                    text = shapes[shape] = json.dumps(list(shape))
                items.append((name, i, text, dtype, math.prod(shape), nbytes))
            lid = by_content[key] = list_id(db, items, by_digest)
        out[e.path] = lid
    return out


def list_id(db: sqlite3.Connection, items: list[tuple[Any, ...]], known: dict[str, int]) -> int:
    """The id of the tensor list holding `items` ((name, position, shape JSON, dtype, numel, nbytes), one
    per name), added if the index has none. `known`: digest -> id, filled as lists are found."""
    digest = hashlib.sha1(json.dumps(items).encode(), usedforsecurity=False).hexdigest()
    lid = known.get(digest)
    if lid is None:
        row = db.execute("SELECT id FROM tensor_lists WHERE digest = ?", (digest,)).fetchone()
        if row is not None:
            lid = row[0]
        else:
            lid = db.execute("INSERT INTO tensor_lists (digest) VALUES (?)", (digest,)).lastrowid
            db.executemany(
                "INSERT INTO tensor_list_items (list_id, name, position, shape, dtype, numel, nbytes) "
                "VALUES (?,?,?,?,?,?,?)",
                [(lid, *item) for item in items],
            )
        assert lid is not None
        known[digest] = lid
    return lid


def drop_unused_tensor_lists(db: sqlite3.Connection) -> None:
    """Delete the tensor lists no checkpoint points at any more (their items cascade)."""
    # NOT EXISTS: one probe of checkpoints_tensor_list per list, not a pass over every checkpoint
    db.execute(
        "DELETE FROM tensor_lists WHERE NOT EXISTS "
        "(SELECT 1 FROM checkpoints c WHERE c.tensor_list_id = tensor_lists.id)"
    )
