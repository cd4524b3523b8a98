"""The SQLite index: the only module that writes SQL.

Schema changes are an ordered registry of migrations, each applied together with its bookkeeping row in one
transaction (sqlite-utils' habit). WAL mode and a busy timeout let the app and the CLI share one database.
One table per thing, so "which checkpoints hold tensor X" or "bytes per run" are plain queries.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CkptlabError
from ..model import IndexEntry, TensorMeta

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
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        applied_now = []
        for name, fn in MIGRATIONS:
            with self.transaction() as db:
                if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    continue
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                applied_now.append(name)
        return applied_now

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
        tensors: dict[str, tuple[TensorMeta, ...]],
        keep: Iterable[str],
        errors: Iterable[tuple[str, str]],
        now: float,
    ) -> None:
        """Write one root's scan in one transaction: upsert `entries` (with their tensors), drop the root's
        checkpoints not in `keep` (vanished), drop runs left empty, replace the root's error rows."""
        keep_set = set(keep)
        with self.transaction() as db:
            root_id = self._root_id(db, root)
            for e in entries:
                self._upsert(db, root_id, e, tensors.get(e.path), now)
            stale = [
                r[0]
                for r in db.execute(
                    "SELECT c.path FROM checkpoints c JOIN runs r ON r.id = c.run_id WHERE r.root_id = ?",
                    (root_id,),
                )
                if r[0] not in keep_set
            ]
            db.executemany("DELETE FROM checkpoints WHERE path = ?", [(p,) for p in stale])
            db.execute(
                "DELETE FROM runs WHERE root_id = ? AND id NOT IN (SELECT DISTINCT run_id FROM checkpoints)",
                (root_id,),
            )
            db.execute("DELETE FROM errors WHERE root_id = ?", (root_id,))
            db.executemany(
                "INSERT INTO errors (root_id, path, error, seen_at) VALUES (?, ?, ?, ?)",
                [(root_id, p, err, now) for p, err in errors],
            )
            db.execute("UPDATE roots SET last_scan_at = ? WHERE id = ?", (now, root_id))

    def _upsert(
        self,
        db: sqlite3.Connection,
        root_id: int,
        e: IndexEntry,
        tensors: tuple[TensorMeta, ...] | None,
        now: float,
    ) -> None:
        run_id = self._run_id(db, root_id, e.run)
        db.execute("DELETE FROM checkpoints WHERE path = ?", (e.path,))  # cascades to files/tensors/metrics
        # a file may move between checkpoints (e.g. a shard re-grouped): free its row first
        db.executemany("DELETE FROM files WHERE path = ?", [(f[0],) for f in e.files])
        cur = db.execute(
            "INSERT INTO checkpoints (path, run_id, layout, format, framework, step, epoch, size_bytes, "
            "n_tensors, n_params, has_optimizer, has_scheduler, has_rng_state, safe, unsafe_globals, status, "
            "reason, mtime, fingerprint, meta_json, indexed_at) "
            f"VALUES ({','.join('?' * 21)})",
            (
                e.path, run_id, e.layout, e.format, e.framework, e.step, e.epoch, e.size_bytes, e.n_tensors,
                e.n_params, _b(e.has_optimizer), _b(e.has_scheduler), _b(e.has_rng_state), _b(e.safe),
                json.dumps(list(e.unsafe_globals)), e.status, e.reason, e.mtime, e.fingerprint,
                json.dumps(e.meta, default=str) if e.meta is not None else None, now,
            ),
        )  # fmt: skip
        cid = cur.lastrowid
        db.executemany(
            "INSERT INTO files (path, checkpoint_id, size, mtime_ns) VALUES (?, ?, ?, ?)",
            [(p, cid, s, m) for p, s, m in e.files],
        )
        db.executemany(
            "INSERT INTO metrics (checkpoint_id, name, value) VALUES (?, ?, ?)",
            [(cid, k, v) for k, v in e.metrics.items()],
        )
        if tensors:
            db.executemany(
                "INSERT OR IGNORE INTO tensors (checkpoint_id, name, position, shape, dtype, numel, nbytes) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (cid, t.name, i, json.dumps(list(t.shape)), t.dtype, t.numel, t.nbytes)
                    for i, t in enumerate(tensors)
                ],
            )

    def forget_root(self, root: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM roots WHERE path = ?", (root,))

    # ------------------------------------------------------------- reads

    def roots(self) -> list[tuple[str, float | None]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_scan_at FROM roots ORDER BY path")]

    def entries(
        self, run: str | None = None, root: str | None = None, with_meta: bool = True
    ) -> list[IndexEntry]:
        """Indexed checkpoints, by run then step/epoch (numerically, never as strings). `with_meta=False`
        skips decoding each row's stored inspect document (the incremental scan only needs fingerprints)."""
        sql = (
            "SELECT c.*, r.path AS run_path, o.path AS root_path FROM checkpoints c "
            "JOIN runs r ON r.id = c.run_id "
            "JOIN roots o ON o.id = r.root_id"
        )
        where, args = [], []
        if run is not None:
            where.append("(r.path = ? OR r.name = ?)")
            args += [run, run]
        if root is not None:
            where.append("o.path = ?")
            args.append(root)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.path, c.step IS NULL, c.step, c.epoch IS NULL, c.epoch, c.path"
        rows = self.db.execute(sql, args).fetchall()
        metrics = self._metrics([r["id"] for r in rows])
        files = self._files([r["id"] for r in rows])
        return [_entry(r, metrics.get(r["id"], {}), files.get(r["id"], ()), with_meta) for r in rows]

    def _metrics(self, ids: list[int]) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT checkpoint_id, name, value FROM metrics WHERE checkpoint_id IN ({marks})"
            for cid, name, value in self.db.execute(q, chunk):
                out.setdefault(cid, {})[name] = value
        return out

    def _files(self, ids: list[int]) -> dict[int, tuple[tuple[str, int, int], ...]]:
        out: dict[int, list[tuple[str, int, int]]] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT checkpoint_id, path, size, mtime_ns FROM files WHERE checkpoint_id IN ({marks})"
            for cid, p, s, m in self.db.execute(q, chunk):
                out.setdefault(cid, []).append((p, s, m))
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def errors(self, root: str | None = None) -> list[tuple[str, str]]:
        sql = "SELECT e.path, e.error FROM errors e JOIN roots o ON o.id = e.root_id"
        rows = self.db.execute(
            sql + (" WHERE o.path = ?" if root else "") + " ORDER BY e.path", (root,) if root else ()
        )
        return [(r[0], r[1]) for r in rows]

    def runs(self) -> list[RunSummary]:
        rows = self.db.execute(
            "SELECT r.path, r.name, COUNT(c.id), COALESCE(SUM(c.size_bytes), 0), MAX(c.step) FROM runs r "
            "LEFT JOIN checkpoints c ON c.run_id = r.id GROUP BY r.id ORDER BY r.path"
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


def _b(v: bool | None) -> int | None:
    return None if v is None else int(v)


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _entry(
    r: sqlite3.Row, metrics: dict[str, float], files: tuple[tuple[str, int, int], ...], with_meta: bool = True
) -> IndexEntry:
    def flag(v: Any) -> bool | None:
        return None if v is None else bool(v)

    epoch = r["epoch"]
    if isinstance(epoch, float) and epoch.is_integer():
        epoch = int(epoch)
    return IndexEntry(
        path=r["path"],
        run=r["run_path"],
        root=r["root_path"],
        layout=r["layout"],
        format=r["format"],
        framework=r["framework"],
        step=r["step"],
        epoch=epoch,
        size_bytes=r["size_bytes"],
        n_tensors=r["n_tensors"],
        n_params=r["n_params"],
        metrics=metrics,
        has_optimizer=flag(r["has_optimizer"]),
        has_scheduler=flag(r["has_scheduler"]),
        has_rng_state=flag(r["has_rng_state"]),
        safe=flag(r["safe"]),
        unsafe_globals=tuple(json.loads(r["unsafe_globals"])),
        status=r["status"],
        reason=r["reason"],
        mtime=r["mtime"],
        fingerprint=r["fingerprint"],
        files=files,
        meta=json.loads(r["meta_json"]) if with_meta and r["meta_json"] else None,
    )
