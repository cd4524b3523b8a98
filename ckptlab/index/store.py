"""The SQLite index: `Store`, a handle on one database, with every write and query the rest of ckptlab uses.

The store's modules are the only ones that write SQL: this one, `migrations` (the schema, as an ordered
registry of migrations), `tensor_lists` (tensor lists shared between checkpoints) and `rows` (stored rows
back into entries). WAL mode and a busy timeout let the app and the CLI share one database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CkptlabError
from ..layouts import in_run_order
from ..model import IndexEntry, TensorMeta
from . import migrations
from .rows import ENTRY_COLUMNS, JOINS, StoredRows, row_entry
from .tensor_lists import drop_unused_tensor_lists, tensor_lists


def default_db_path() -> Path:
    """`CKPTLAB_DB` if set, else `index.sqlite` in the user's cache dir."""
    env = os.environ.get("CKPTLAB_DB")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ckptlab")) / "index.sqlite"


@dataclass(frozen=True)
class RunSummary:
    path: str
    name: str
    n_checkpoints: int
    size_bytes: int
    last_step: int | None


class Store:
    """A handle on one index database. Cheap to open; close() when done (or use as a context manager)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so two processes serialise cleanly
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.execute("PRAGMA foreign_keys = ON")
        if str(self.path) != ":memory:":
            self._enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.migrate()

    def _enable_wal(self, wait_s: float = 30.0) -> None:
        # switching to WAL needs an exclusive lock and SQLite does not call the busy handler for it, so two
        # processes opening a brand-new index at once must retry here
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise CkptlabError(str(self.path), f"cannot open the index: {e}") from None
                time.sleep(delay)
                delay = min(0.2, delay * 2)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------- migrations

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; returns the names applied now."""
        return migrations.apply_pending(self.db, self.transaction)

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM _migrations ORDER BY name")]

    # ------------------------------------------------------------- writes

    def _root_id(self, db: sqlite3.Connection, root: str) -> int:
        db.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", (root,))
        return int(db.execute("SELECT id FROM roots WHERE path = ?", (root,)).fetchone()[0])

    def _run_id(self, db: sqlite3.Connection, root_id: int, run: str) -> int:
        db.execute(
            "INSERT OR IGNORE INTO runs (path, root_id, name) VALUES (?, ?, ?)",
            (run, root_id, Path(run).name or run),
        )
        return int(db.execute("SELECT id FROM runs WHERE path = ?", (run,)).fetchone()[0])

    def save_scan(
        self,
        root: str,
        entries: Iterable[IndexEntry],
        tensors: Mapping[str, Sequence[TensorMeta]],
        keep: Iterable[str],
        errors: Iterable[tuple[str, str]],
        now: float,
        stored: StoredRows | None = None,
    ) -> None:
        """Write one root's scan in one transaction: replace the rows of `entries` (with their tensors), drop
        the root's checkpoints not in `keep` (vanished), drop runs left empty, replace the root's error rows.
        Pass only what changed in `entries`: checkpoints in `keep` but not in `entries` are left as they are.
        `stored`, the rows the scan compared against (`stored(root)`), spares the query for vanished rows
        when the database has not changed since they were read.
        """
        entries = list({e.path: e for e in entries}.values())  # a path given twice: the last one counts
        keep_set = set(keep)
        with self.transaction() as db:
            # the paths under this root, known without a query when nothing changed since they were read
            snapshot = stored.paths() if stored is not None and stored.version == self._version() else None
            root_id = self._root_id(db, root)
            if entries:
                # the paths that can have a row to replace: with a snapshot and no checkpoint under another
                # root (roots can overlap), only the snapshot's
                others = db.execute("SELECT 1 FROM runs WHERE root_id != ? LIMIT 1", (root_id,)).fetchone()
                self._replace(db, root_id, entries, tensors, now, snapshot if others is None else None)
            if snapshot is not None:
                stale = [(p,) for p in {*snapshot, *(e.path for e in entries)} if p not in keep_set]
            else:
                stale = [
                    (r[0],)
                    for r in db.execute(
                        "SELECT c.path FROM checkpoints c JOIN runs r ON r.id = c.run_id WHERE r.root_id = ?",
                        (root_id,),
                    )
                    if r[0] not in keep_set
                ]
            if stale:
                db.executemany("DELETE FROM checkpoints WHERE path = ?", stale)
            if stale or entries:  # only then can a run or a tensor list have lost its last checkpoint
                db.execute(
                    "DELETE FROM runs WHERE root_id = ? "
                    "AND id NOT IN (SELECT DISTINCT run_id FROM checkpoints)",
                    (root_id,),
                )
                drop_unused_tensor_lists(db)
            db.execute("DELETE FROM errors WHERE root_id = ?", (root_id,))
            db.executemany(
                "INSERT INTO errors (root_id, path, error, seen_at) VALUES (?, ?, ?, ?)",
                [(root_id, p, err, now) for p, err in errors],
            )
            db.execute("UPDATE roots SET last_scan_at = ? WHERE id = ?", (now, root_id))

    def _replace(
        self,
        db: sqlite3.Connection,
        root_id: int,
        entries: list[IndexEntry],
        tensors: Mapping[str, Sequence[TensorMeta]],
        now: float,
        known: Collection[str] | None = None,
    ) -> None:
        """Delete, then insert, the rows of `entries`: one executemany per table, since a cold scan writes
        thousands of checkpoints and tens of thousands of tensors (per-row statements cost more than the
        data). `known`: the only paths that can have a row already (None: any). Runs in the caller's write
        transaction."""
        runs = {run: self._run_id(db, root_id, run) for run in dict.fromkeys(e.run for e in entries)}
        old = [(e.path,) for e in entries if known is None or e.path in known]
        db.executemany("DELETE FROM checkpoints WHERE path = ?", old)  # cascades to files and metrics
        lists = tensor_lists(db, entries, tensors)
        # ids are given here, not by SQLite, so the child rows can go in one executemany each; the write
        # lock is held (BEGIN IMMEDIATE), so nobody else can take the same ids
        first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints").fetchone()[0]
        db.executemany(
            "INSERT INTO checkpoints (id, path, run_id, layout, format, framework, step, epoch, size_bytes, "
            "n_tensors, n_params, has_optimizer, has_scheduler, has_rng_state, safe, unsafe_globals, status, "
            "reason, mtime, fingerprint, meta_json, indexed_at, tensor_list_id, link_to) "
            f"VALUES ({','.join('?' * 24)})",
            [
                (
                    cid, e.path, runs[e.run], e.layout, e.format, e.framework, e.step, e.epoch, e.size_bytes,
                    e.n_tensors, e.n_params, _b(e.has_optimizer), _b(e.has_scheduler), _b(e.has_rng_state),
                    _b(e.safe), _json_list(e.unsafe_globals), e.status, e.reason, e.mtime, e.fingerprint,
                    None if e.meta is None else _encode(e.meta), now, lists.get(e.path), e.link_to,
                )
                for cid, e in enumerate(entries, first)
            ],
        )  # fmt: skip
        db.executemany(
            # OR REPLACE: a file may move between checkpoints (a shard re-grouped, or listed by two sharded
            # indexes): the row of the last checkpoint to claim it stays
            "INSERT OR REPLACE INTO files (path, checkpoint_id, size, mtime_ns) VALUES (?, ?, ?, ?)",
            [(p, cid, size, mtime) for cid, e in enumerate(entries, first) for p, size, mtime in e.files],
        )
        db.executemany(
            "INSERT INTO metrics (checkpoint_id, name, value) VALUES (?, ?, ?)",
            [(cid, k, v) for cid, e in enumerate(entries, first) for k, v in e.metrics.items()],
        )

    def forget_root(self, root: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM roots WHERE path = ?", (root,))
            drop_unused_tensor_lists(db)

    # ------------------------------------------------------------- reads

    def roots(self) -> list[tuple[str, float | None]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_scan_at FROM roots ORDER BY path")]

    def entries(self, run: str | None = None, with_meta: bool = True) -> list[IndexEntry]:
        """Indexed checkpoints in `layouts.in_run_order`, as the scan lists them: by run, then step/epoch,
        then the name (numerically, never as strings). `with_meta=False` skips decoding each row's stored
        inspect document (the table and the scan do not need it)."""
        where, args = [], []
        if run is not None:
            where.append("(r.path = ? OR r.name = ?)")
            args += [run, run]
        # by path first, so entries that tie in `in_run_order` come in the same order every time
        return in_run_order(self._select_entries(" AND ".join(where), args, with_meta, "c.path"))

    def stored(self, root: str) -> StoredRows:
        """Every checkpoint indexed under `root`, as an incremental scan compares against and reuses them."""
        version = self._version()  # before reading: a commit in between makes save_scan query again
        rows, metrics = self._select("o.path = ?", [root], False, None)
        return StoredRows(rows, metrics, version)

    def _version(self) -> tuple[int, int]:
        # data_version moves when another connection commits, total_changes when this one writes: both
        # unchanged means the database is as this connection last read it
        return self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes

    def _select_entries(
        self, where: str, args: list[Any], with_meta: bool, order: str | None
    ) -> list[IndexEntry]:
        rows, metrics = self._select(where, args, with_meta, order)
        files: dict[int, list[tuple[str, int, int]]] = {}
        if rows:
            for cid, p, size, mtime in self._cursor().execute(
                f"SELECT f.checkpoint_id, f.path, f.size, f.mtime_ns {JOINS} "
                f"JOIN files f ON f.checkpoint_id = c.id{_where(where)}",
                args,
            ):
                files.setdefault(cid, []).append((p, size, mtime))
        return [row_entry(r, metrics.get(r[0], {}), tuple(sorted(files.get(r[0], ())))) for r in rows]

    def _select(
        self, where: str, args: list[Any], with_meta: bool, order: str | None
    ) -> tuple[list[tuple[Any, ...]], dict[int, dict[str, float]]]:
        """Rows of `ENTRY_COLUMNS` + meta_json matching `where`, and their metrics by checkpoint id."""
        cur = self._cursor()
        meta = "c.meta_json" if with_meta else "NULL"
        sql = f"SELECT {ENTRY_COLUMNS}, {meta} {JOINS}{_where(where)}"
        rows = cur.execute(sql + (f" ORDER BY {order}" if order else ""), args).fetchall()
        metrics: dict[int, dict[str, float]] = {}
        if rows:  # the metrics of the same rows, by the same condition: one query, no IN lists of ids
            for cid, name, value in cur.execute(
                f"SELECT m.checkpoint_id, m.name, m.value {JOINS} "
                f"JOIN metrics m ON m.checkpoint_id = c.id{_where(where)}",
                args,
            ):
                metrics.setdefault(cid, {})[name] = value
        return rows, metrics

    def _cursor(self) -> sqlite3.Cursor:
        # plain tuples, not sqlite3.Row: a re-scan reads thousands of rows of 20 columns
        cur = self.db.cursor()
        cur.row_factory = None
        return cur

    def errors(self) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT e.path, e.error FROM errors e JOIN roots o ON o.id = e.root_id ORDER BY e.path"
        )
        return [(r[0], r[1]) for r in rows]

    def runs(self) -> list[RunSummary]:
        rows = self.db.execute(
            # a link to another checkpoint takes no bytes of its own
            "SELECT r.path, r.name, COUNT(c.id), "
            "COALESCE(SUM(CASE WHEN c.link_to IS NULL THEN c.size_bytes ELSE 0 END), 0), MAX(c.step) "
            "FROM runs r LEFT JOIN checkpoints c ON c.run_id = r.id GROUP BY r.id ORDER BY r.path"
        )
        return [RunSummary(*r) for r in rows]

    def checkpoints_with_tensor(self, name: str) -> list[str]:
        rows = self.db.execute(
            "SELECT c.path FROM tensors t JOIN checkpoints c ON c.id = t.checkpoint_id "
            "WHERE t.name = ? ORDER BY c.path",
            (name,),
        )
        return [r[0] for r in rows]

    def tensors(self, path: str) -> list[TensorMeta]:
        rows = self.db.execute(
            "SELECT t.name, t.shape, t.dtype, t.nbytes FROM tensors t "
            "JOIN checkpoints c ON c.id = t.checkpoint_id "
            "WHERE c.path = ? ORDER BY t.position",
            (path,),
        )
        return [TensorMeta(r[0], tuple(json.loads(r[1])), r[2], r[3]) for r in rows]


# the inspect documents: one encoder object for every row; default=str as before (metadata values are
# JSON-safe already, this guards against a reader that returns something else); no cycle check, since a
# document is a tree built for the row (a cycle would have recursed forever while making it JSON-safe)
_encode = json.JSONEncoder(default=str, check_circular=False).encode


def _where(condition: str) -> str:
    return f" WHERE {condition}" if condition else ""


def _b(v: bool | None) -> int | None:
    return None if v is None else int(v)


def _json_list(items: Sequence[str]) -> str:
    return json.dumps(list(items)) if items else "[]"  # nearly every checkpoint has no unsafe globals
