"""The index's schema: an ordered registry of migrations, each applied together with its bookkeeping row
in one transaction (sqlite-utils' habit). One table per thing, so "which checkpoints hold tensor X" or
"bytes per run" are plain queries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from .tensor_lists import list_id

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(name: str) -> Callable[[Migration], Migration]:
    def register(fn: Migration) -> Migration:
        MIGRATIONS.append((name, fn))
        return fn

    return register


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # not executescript(): it COMMITs first, which would split a migration from its bookkeeping row
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migration("0001_initial")
def _initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE roots (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            last_scan_at REAL
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            root_id INTEGER NOT NULL REFERENCES roots(id) ON DELETE CASCADE,
            name TEXT NOT NULL
        );
        CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            layout TEXT NOT NULL,
            format TEXT,
            framework TEXT,
            step INTEGER,
            epoch REAL,
            size_bytes INTEGER NOT NULL DEFAULT 0,
            n_tensors INTEGER,
            n_params INTEGER,
            has_optimizer INTEGER,
            has_scheduler INTEGER,
            has_rng_state INTEGER,
            safe INTEGER,
            unsafe_globals TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL CHECK (status IN ('ok', 'unreadable', 'incomplete', 'debris')),
            reason TEXT,
            mtime REAL,
            fingerprint TEXT NOT NULL,
            meta_json TEXT,
            indexed_at REAL NOT NULL
        );
        CREATE INDEX checkpoints_run ON checkpoints(run_id, step);
        CREATE TABLE files (
            path TEXT PRIMARY KEY,
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL
        );
        CREATE INDEX files_checkpoint ON files(checkpoint_id);
        CREATE TABLE tensors (
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            shape TEXT NOT NULL,
            dtype TEXT NOT NULL,
            numel INTEGER NOT NULL,
            nbytes INTEGER NOT NULL,
            PRIMARY KEY (checkpoint_id, name)
        ) WITHOUT ROWID;
        CREATE INDEX tensors_name ON tensors(name);
        CREATE TABLE metrics (
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (checkpoint_id, name)
        ) WITHOUT ROWID;
        CREATE TABLE errors (
            id INTEGER PRIMARY KEY,
            root_id INTEGER NOT NULL REFERENCES roots(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            error TEXT NOT NULL,
            seen_at REAL NOT NULL
        );
        """,
    )


@migration("0002_shared_tensor_lists")
def _shared_tensor_lists(db: sqlite3.Connection) -> None:
    """Checkpoints of one model hold the same tensor list (names, shapes, dtypes): store each distinct list
    once and point checkpoints at it, instead of one row per tensor per checkpoint. A scan of 1,850 small
    checkpoints wrote 10,700 tensor rows (most of its write time) for 15 distinct lists; a run of LLM
    checkpoints repeats thousands of rows per checkpoint. `tensors` stays as a view with the same columns,
    so queries on it (the README's among them) read as before."""
    _run_script(
        db,
        """
        CREATE TABLE tensor_lists (
            id INTEGER PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE
        );
        CREATE TABLE tensor_list_items (
            list_id INTEGER NOT NULL REFERENCES tensor_lists(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            shape TEXT NOT NULL,
            dtype TEXT NOT NULL,
            numel INTEGER NOT NULL,
            nbytes INTEGER NOT NULL,
            PRIMARY KEY (list_id, name)
        ) WITHOUT ROWID;
        CREATE INDEX tensor_list_items_name ON tensor_list_items(name);
        ALTER TABLE checkpoints ADD COLUMN tensor_list_id INTEGER REFERENCES tensor_lists(id);
        CREATE INDEX checkpoints_tensor_list ON checkpoints(tensor_list_id)
        """,
    )
    rows: dict[int, list[tuple[Any, ...]]] = {}
    for cid, *item in db.execute(
        "SELECT checkpoint_id, name, position, shape, dtype, numel, nbytes FROM tensors "
        "ORDER BY checkpoint_id, position"
    ):
        rows.setdefault(cid, []).append(tuple(item))
    ids: dict[str, int] = {}
    for cid, items in rows.items():
        db.execute("UPDATE checkpoints SET tensor_list_id = ? WHERE id = ?", (list_id(db, items, ids), cid))
    _run_script(
        db,
        """
        DROP TABLE tensors;
        CREATE VIEW tensors AS
            SELECT c.id AS checkpoint_id, i.name, i.position, i.shape, i.dtype, i.numel, i.nbytes
            FROM checkpoints c JOIN tensor_list_items i ON i.list_id = c.tensor_list_id
        """,
    )


@migration("0003_link_to")
def _link_to(db: sqlite3.Connection) -> None:
    """A checkpoint file that is a symlink to another checkpoint of the root names it, so that bytes per
    run count the file once (a Lightning run with save_last="link" counted its last save twice)."""
    db.execute("ALTER TABLE checkpoints ADD COLUMN link_to TEXT")


@migration("0004_read_again_2026_11")
def _read_again(db: sqlite3.Connection) -> None:
    """Every checkpoint is read again on the next scan. A row is reused while its files are unchanged, but
    the readers changed what they say of unchanged files (DCP's nested optimizers and metrics, numpy-scalar
    metrics, Accelerate's RNG files, dotted pickle globals now unsafe): a stale verdict would stay in the
    index until the file changed. A reader change of that kind adds a migration like this one."""
    db.execute("UPDATE checkpoints SET fingerprint = ''")


@migration("0005_read_torch_shards_again")
def _read_torch_shards_again(db: sqlite3.Connection) -> None:
    """Sharded torch checkpoints are read again on the next scan: their stored documents named tensors of
    different shards as tied weights (torch numbers storages per file, and the shards' keys were merged)."""
    db.execute("UPDATE checkpoints SET fingerprint = '' WHERE format = 'torch-sharded'")


def apply_pending(
    db: sqlite3.Connection, transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
) -> list[str]:
    """Apply the migrations `db` lacks, in order, each with its bookkeeping row in one `transaction()`;
    returns the names applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    # one read first: opening an up-to-date index takes no write lock (a scan in another process may
    # hold it for a while), and each pending migration is checked again under the lock below
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    applied_now = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with transaction() as tx:
            if tx.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                continue
            fn(tx)
            tx.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            applied_now.append(name)
    return applied_now
