"""The SQLite index: the only module that writes SQL.

Schema changes are an ordered registry of migrations, each applied together with its bookkeeping row in one
transaction (sqlite-utils' habit). WAL mode and a busy timeout let the app and the CLI share one database.
One table per thing, so "which checkpoints hold tensor X" or "bytes per run" are plain queries.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..errors import CkptlabError
from ..model import IndexEntry, TensorMeta, new_entry

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
        db.execute("UPDATE checkpoints SET tensor_list_id = ? WHERE id = ?", (_list_id(db, items, ids), cid))
    _run_script(
        db,
        """
        DROP TABLE tensors;
        CREATE VIEW tensors AS
            SELECT c.id AS checkpoint_id, i.name, i.position, i.shape, i.dtype, i.numel, i.nbytes
            FROM checkpoints c JOIN tensor_list_items i ON i.list_id = c.tensor_list_id
        """,
    )


def _list_id(db: sqlite3.Connection, items: list[tuple[Any, ...]], known: dict[str, int]) -> int:
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


def _drop_unused_tensor_lists(db: sqlite3.Connection) -> None:
    # NOT EXISTS: one probe of checkpoints_tensor_list per list, not a pass over every checkpoint
    db.execute(
        "DELETE FROM tensor_lists WHERE NOT EXISTS "
        "(SELECT 1 FROM checkpoints c WHERE c.tensor_list_id = tensor_lists.id)"
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
        # one read first: opening an up-to-date index takes no write lock (a scan in another process may
        # hold it for a while), and each pending migration is checked again under the lock below
        done = {r[0] for r in self.db.execute("SELECT name FROM _migrations")}
        applied_now = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
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
                _drop_unused_tensor_lists(db)
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
        lists = _tensor_lists(db, entries, tensors)
        # ids are given here, not by SQLite, so the child rows can go in one executemany each; the write
        # lock is held (BEGIN IMMEDIATE), so nobody else can take the same ids
        first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints").fetchone()[0]
        db.executemany(
            "INSERT INTO checkpoints (id, path, run_id, layout, format, framework, step, epoch, size_bytes, "
            "n_tensors, n_params, has_optimizer, has_scheduler, has_rng_state, safe, unsafe_globals, status, "
            "reason, mtime, fingerprint, meta_json, indexed_at, tensor_list_id) "
            f"VALUES ({','.join('?' * 23)})",
            [
                (
                    cid, e.path, runs[e.run], e.layout, e.format, e.framework, e.step, e.epoch, e.size_bytes,
                    e.n_tensors, e.n_params, _b(e.has_optimizer), _b(e.has_scheduler), _b(e.has_rng_state),
                    _b(e.safe), _json_list(e.unsafe_globals), e.status, e.reason, e.mtime, e.fingerprint,
                    None if e.meta is None else _encode(e.meta), now, lists.get(e.path),
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
            _drop_unused_tensor_lists(db)

    # ------------------------------------------------------------- reads

    def roots(self) -> list[tuple[str, float | None]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_scan_at FROM roots ORDER BY path")]

    def entries(
        self, run: str | None = None, root: str | None = None, with_meta: bool = True
    ) -> list[IndexEntry]:
        """Indexed checkpoints, by run then step/epoch (numerically, never as strings). `with_meta=False`
        skips decoding each row's stored inspect document (the table and the scan do not need it)."""
        where, args = [], []
        if run is not None:
            where.append("(r.path = ? OR r.name = ?)")
            args += [run, run]
        if root is not None:
            where.append("o.path = ?")
            args.append(root)
        order = "r.path, c.step IS NULL, c.step, c.epoch IS NULL, c.epoch, c.path"
        return self._select_entries(" AND ".join(where), args, with_meta, order)

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
                f"SELECT f.checkpoint_id, f.path, f.size, f.mtime_ns {_JOINS} "
                f"JOIN files f ON f.checkpoint_id = c.id{_where(where)}",
                args,
            ):
                files.setdefault(cid, []).append((p, size, mtime))
        return [_entry(r, metrics.get(r[0], {}), tuple(sorted(files.get(r[0], ())))) for r in rows]

    def _select(
        self, where: str, args: list[Any], with_meta: bool, order: str | None
    ) -> tuple[list[tuple[Any, ...]], dict[int, dict[str, float]]]:
        """Rows of `_ENTRY_COLUMNS` + meta_json matching `where`, and their metrics by checkpoint id."""
        cur = self._cursor()
        meta = "c.meta_json" if with_meta else "NULL"
        sql = f"SELECT {_ENTRY_COLUMNS}, {meta} {_JOINS}{_where(where)}"
        rows = cur.execute(sql + (f" ORDER BY {order}" if order else ""), args).fetchall()
        metrics: dict[int, dict[str, float]] = {}
        if rows:  # the metrics of the same rows, by the same condition: one query, no IN lists of ids
            for cid, name, value in cur.execute(
                f"SELECT m.checkpoint_id, m.name, m.value {_JOINS} "
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


_TENSOR_KEY = itemgetter(0, 1, 2, 3)  # TensorMeta's name, shape, dtype, nbytes: what the index keeps


def _tensor_lists(
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
            lid = by_content[key] = _list_id(db, items, by_digest)
        out[e.path] = lid
    return out


_JOINS = "FROM checkpoints c JOIN runs r ON r.id = c.run_id JOIN roots o ON o.id = r.root_id"
_ENTRY_COLUMNS = (
    "c.id, c.path, r.path, o.path, c.layout, c.format, c.framework, c.step, c.epoch, c.size_bytes, "
    "c.n_tensors, c.n_params, c.has_optimizer, c.has_scheduler, c.has_rng_state, c.safe, c.unsafe_globals, "
    "c.status, c.reason, c.mtime, c.fingerprint"
)
# the inspect documents: one encoder object for every row; default=str as before (metadata values are
# JSON-safe already, this guards against a reader that returns something else); no cycle check, since a
# document is a tree built for the row (a cycle would have recursed forever while making it JSON-safe)
_encode = json.JSONEncoder(default=str, check_circular=False).encode


def _where(condition: str) -> str:
    return f" WHERE {condition}" if condition else ""


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
        return _entry(r, self._metrics.get(r[0], {}), tuple(sorted(files)) if len(files) > 1 else files)


def _b(v: bool | None) -> int | None:
    return None if v is None else int(v)


def _json_list(items: Sequence[str]) -> str:
    return json.dumps(list(items)) if items else "[]"  # nearly every checkpoint has no unsafe globals


def _entry(
    r: tuple[Any, ...], metrics: dict[str, float], files: tuple[tuple[str, int, int], ...]
) -> IndexEntry:
    """An entry from a row of `_ENTRY_COLUMNS` followed by `meta_json`."""
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
            "meta": json.loads(r[21]) if r[21] else None,
        }
    )
