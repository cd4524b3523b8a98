"""What the dashboard shows of the index, as plain data: labels, table rows, filters, summary numbers.

Pure functions over `IndexEntry` lists (no SQL, no Streamlit, no pandas), so they are tested with entries
built in memory. `ckptlab.ui` turns the rows into a DataFrame and the numbers into widgets.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..layouts import hub_repo
from ..model import STATUSES, IndexEntry, human_bytes, plural, size_unit

if TYPE_CHECKING:
    from .scan import ScanResult

SAFETY_CLASSES = ("safe", "unsafe", "unchecked")
UNKNOWN_FORMAT = "(none)"  # the format filter's name for rows nothing could be read from

# the table's columns, in order; `path` is kept for selection and hidden by the page
TABLE_COLUMNS = (
    "run",
    "checkpoint",
    "step",
    "epoch",
    "format",
    "size",
    "params",
    "status",
    "safety",
    "metrics",
    "layout",
    "reason",
    "path",
)

# Metrics that say how good a checkpoint is come first; bookkeeping values (what the best score was so
# far, the learning rate) last: they are in every HF/Lightning checkpoint and crowd out the useful ones.
_BOOKKEEPING = ("best_", "current_score", "learning_rate", "lr", "grad_norm", "epoch", "step", "total_flos")


@dataclass(frozen=True)
class Summary:
    """The numbers on the home page's cards."""

    n_checkpoints: int
    n_runs: int
    total_bytes: int
    n_unsafe: int
    by_status: Mapping[str, int]

    @property
    def total_str(self) -> str:
        return human_bytes(self.total_bytes)

    @property
    def n_unreadable(self) -> int:
        return self.by_status.get("unreadable", 0)

    @property
    def n_incomplete(self) -> int:
        return self.by_status.get("incomplete", 0)

    @property
    def n_debris(self) -> int:
        return self.by_status.get("debris", 0)


def summarize(entries: Sequence[IndexEntry]) -> Summary:
    """Counts and bytes over `entries` (every file counted once: debris and incomplete sets take space too,
    a link to another checkpoint takes none).

    >>> e = IndexEntry("/r/a.pt", "/r", "/r", "file", "ok", "fp", size_bytes=10, safe=False)
    >>> s = summarize([e]); (s.n_checkpoints, s.n_runs, s.total_bytes, s.n_unsafe, s.n_debris)
    (1, 1, 10, 1, 0)
    """
    status = Counter(e.status for e in entries)
    return Summary(
        n_checkpoints=len(entries),
        n_runs=len({e.run for e in entries}),
        total_bytes=sum(e.size_bytes for e in entries if e.link_to is None),
        n_unsafe=sum(1 for e in entries if e.safe is False),
        by_status={s: status.get(s, 0) for s in STATUSES},
    )


# ---------------------------------------------------------------------------------------------- labels


def _rel(path: str, base: str) -> str | None:
    """`path` relative to `base` when it lies strictly inside it, else None."""
    base = base.rstrip(os.sep)
    if path.startswith(base + os.sep):
        return path[len(base) + 1 :]
    return None


def _name(path: str) -> str:
    return os.path.basename(path.rstrip(os.sep)) or path


def run_labels(entries: Iterable[IndexEntry]) -> dict[str, str]:
    """run path -> a short label: the run's path relative to its root (`plain-pytorch/exports`), or the
    root's own name for checkpoints lying directly in the root. Labels that would collide across roots get
    the root's name in front.

    >>> pairs = (("/a/x/m.pt", "/a/x"), ("/a/m.pt", "/a"))
    >>> e = [IndexEntry(p, run, "/a", "file", "ok", "") for p, run in pairs]
    >>> run_labels(e)
    {'/a/x': 'x', '/a': 'a'}

    A Hugging Face hub cache folder is labelled with its repo id (`org/name`). Runs whose labels collide
    (the same folder under two roots, two roots scanned that are runs of the same name) are labelled with
    the shortest end of their paths that tells them apart (`csv/version_0`, `tb/version_0`).
    """
    runs: dict[str, str] = {}
    for e in entries:
        runs.setdefault(e.run, e.root)
    labels = {run: hub_repo(_name(run)) or _rel(run, root) or _name(run) for run, root in runs.items()}
    clashes = Counter(labels.values())
    groups: dict[str, list[str]] = {}
    for run, label in labels.items():
        if clashes[label] > 1:
            groups.setdefault(label, []).append(run)
    taken = {label for label, n in clashes.items() if n == 1}
    for group in groups.values():
        labels.update(_distinct_tails(group, taken))
    return labels


def _distinct_tails(runs: Sequence[str], taken: Collection[str]) -> dict[str, str]:
    """run -> the last k folders of its path, for the smallest k (at least 2: one more than a folder name)
    that makes them distinct and unlike any label in `taken`; the whole path when none does."""
    split = {run: run.rstrip(os.sep).split(os.sep) for run in runs}
    for k in range(2, max(len(parts) for parts in split.values())):
        tails = {run: "/".join(parts[-k:]) for run, parts in split.items()}
        if len(set(tails.values())) == len(tails) and not any(t in taken for t in tails.values()):
            return tails
    return {run: run for run in runs}


def run_name(run: str) -> str:
    """A run's name on its own: a hub cache folder's repo id (`org/name`), else the folder's name."""
    return hub_repo(_name(run)) or _name(run)


def runs_named(name: str, labels: Mapping[str, str]) -> list[str]:
    """The runs (keys of `labels`: run paths, from `run_labels`) that `name` names as a user types it off
    the table: the run's label (`lightning/csv/version_0`, a hub repo's `org/name`), its `run_name`, or the
    end of its path in whole folders (`version_0`, `csv/version_0`). A trailing `/` is ignored.

    Every run that matches is returned, in `labels`' order: a listing only reads, its run column tells the
    matches apart, and one more folder (`csv/version_0`) narrows it; refusing a name two runs share would
    make the user retype what the table already disambiguates.

    >>> labels = {"/o/csv/version_0": "csv/version_0", "/o/tb/version_0": "tb/version_0", "/o/hf": "hf"}
    >>> [runs_named(name, labels) for name in ("version_0", "tb/version_0/", "sv/version_0")]
    [['/o/csv/version_0', '/o/tb/version_0'], ['/o/tb/version_0'], []]
    """
    want = name.rstrip("/" + os.sep)
    if not want:
        return []
    tail = os.sep + want.replace("/", os.sep)
    return [
        run
        for run, label in labels.items()
        if want in (label, run_name(run)) or run.rstrip(os.sep).endswith(tail)
    ]


def match_runs(query: str, labels: Mapping[str, str]) -> list[str]:
    """The indexed runs (keys of `labels`, from `run_labels`) that `ckptlab ls --run QUERY` means.

    A path (relative to the current directory, with `.`, `..`, `~`, a trailing `/` or through a symlink) is
    resolved and compared with the stored run paths, which are absolute and resolved (the scan resolves its
    roots). Else, unless it is written as a path (absolute, `~`, `./`, `../`), the query names runs as the
    table shows them (`runs_named`: a label, a folder name, the end of a path): every such run. A
    path that is a run wins over names, so `--run version_0` inside `lightning/csv/` is that one run.
    """
    where = os.path.expanduser(query)
    forms = {os.path.normpath(os.path.abspath(where)), os.path.realpath(where)}
    hits = [run for run in labels if run in forms]
    if not hits and os.path.exists(where):  # a run reached through a link inside its root
        hits = [run for run in labels if os.path.realpath(run) in forms]
    if hits:
        return hits
    explicit = os.path.isabs(where) or query.startswith("~") or query.split("/")[0] in (".", "..")
    return [] if explicit else runs_named(query, labels)


def closest_runs(name: str, labels: Mapping[str, str], n: int = 5) -> list[str]:
    """Labels of up to `n` runs whose label or name is most like `name` (a "did you mean" hint), best first.

    >>> closest_runs("version0", {"/o/csv/version_0": "csv/version_0", "/o/hf": "hf"})
    ['csv/version_0']
    """
    want = name.rstrip("/" + os.sep).casefold()
    scores: dict[str, float] = {}
    for run, label in labels.items():
        for text in (label, run_name(run)):
            for query in (want, _name(want)):  # a path typed in full is compared by its last folder too
                score = difflib.SequenceMatcher(None, query, text.casefold()).ratio()
                scores[label] = max(scores.get(label, 0.0), score)
    best = sorted((label for label, score in scores.items() if score >= 0.6), key=lambda k: -scores[k])
    return best[:n]


def checkpoint_label(entry: IndexEntry) -> str:
    """The checkpoint's path relative to its run (`checkpoints/epoch=1-step=64.ckpt`), else its name (an HF
    output_dir's own final save: `hf-run/ (final save)`); a link to another checkpoint says which, relative
    to the link's folder as `ls -l` would show it (`last.ckpt → epoch=2-step=12.ckpt`,
    `model.safetensors → ../hf/checkpoint-4`)."""
    label = _rel(entry.path, entry.run) or _name(entry.path)
    if entry.path == entry.run and entry.layout == "hf-checkpoint":  # the output_dir's own final save
        label = f"{label}/ (final save)"
    if entry.link_to is None:
        return label
    try:
        target = os.path.relpath(entry.link_to, os.path.dirname(entry.path))
    except ValueError:  # another drive on Windows: no relative path
        target = entry.link_to
    return f"{label} → {target}"


def safety_class(entry: IndexEntry) -> str:
    """'safe', 'unsafe', or 'unchecked' (nothing could be read: debris, incomplete, unreadable)."""
    if entry.safe is None:
        return "unchecked"
    return "safe" if entry.safe else "unsafe"


def safety_text(entry: IndexEntry) -> str | None:
    """'safe', '⚠ unsafe: posix.system +1', or None when unchecked."""
    cls = safety_class(entry)
    if cls != "unsafe":
        return "safe" if cls == "safe" else None
    bad = entry.unsafe_globals
    if not bad:
        return "⚠ unsafe"
    return f"⚠ unsafe: {bad[0]}" + (f" +{len(bad) - 1}" if len(bad) > 1 else "")


def _metric_rank(name: str) -> tuple[int, str]:
    low = name.lower()
    if low.startswith(_BOOKKEEPING) or low in _BOOKKEEPING:
        return 3, low
    if "loss" in low:
        return 0, low
    if "acc" in low:
        return 1, low
    return 2, low


def metrics_text(metrics: Mapping[str, float], limit: int = 3) -> str:
    """A short metrics string: losses, then accuracies, then other scores, at most `limit` values.
    Bookkeeping values (best score so far, learning rate, grad norm) are shown only when nothing else is.

    >>> metrics_text({"learning_rate": 1e-4, "val_acc": 0.9, "loss": 0.1234567, "best_model_score": 0.1})
    'loss=0.1235, val_acc=0.9'
    >>> metrics_text({"learning_rate": 1e-4}), metrics_text({})
    ('learning_rate=0.0001', '')
    """
    ranked = sorted(metrics, key=_metric_rank)
    useful = [k for k in ranked if _metric_rank(k)[0] < 3]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in (useful or ranked)[:limit])


# ---------------------------------------------------------------------------------------------- table


def format_name(entry: IndexEntry) -> str:
    return entry.format or UNKNOWN_FORMAT


def filter_options(entries: Sequence[IndexEntry], labels: Mapping[str, str]) -> dict[str, list[str]]:
    """The values each filter offers: runs (by label, in index order), formats, statuses, safety classes
    (statuses and safety in their fixed order), only those present."""
    present_status = {e.status for e in entries}
    present_safety = {safety_class(e) for e in entries}
    return {
        "run": list(dict.fromkeys(labels[e.run] for e in entries)),
        "format": sorted({format_name(e) for e in entries}),
        "status": [s for s in STATUSES if s in present_status],
        "safety": [s for s in SAFETY_CLASSES if s in present_safety],
    }


def filter_entries(
    entries: Sequence[IndexEntry],
    labels: Mapping[str, str],
    *,
    runs: Collection[str] = (),
    formats: Collection[str] = (),
    statuses: Collection[str] = (),
    safety: Collection[str] = (),
) -> list[IndexEntry]:
    """Entries matching every non-empty filter (an empty filter keeps everything). `runs` are labels."""
    return [
        e
        for e in entries
        if (not runs or labels[e.run] in runs)
        and (not formats or format_name(e) in formats)
        and (not statuses or e.status in statuses)
        and (not safety or safety_class(e) in safety)
    ]


def table_rows(
    entries: Sequence[IndexEntry], labels: Mapping[str, str], unit: tuple[str, int] | None = None
) -> list[dict[str, Any]]:
    """One dict per entry with TABLE_COLUMNS as keys; `size` is in `unit` (default: `size_unit` of the
    sizes) as a float, so the column sorts numerically and reads in binary units."""
    _name, div = unit or size_unit(e.size_bytes for e in entries)
    return [
        {
            "run": labels[e.run],
            "checkpoint": checkpoint_label(e),
            "step": e.step,
            "epoch": e.epoch,
            "format": e.format,
            "size": e.size_bytes / div,
            "params": e.n_params,
            "status": e.status,
            "safety": safety_text(e),
            "metrics": metrics_text(e.metrics),
            "layout": e.layout,
            "reason": e.reason or "",
            "path": e.path,
        }
        for e in entries
    ]


def usage_rows(entries: Iterable[IndexEntry], labels: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """(run label, status, bytes) per checkpoint: the input of `plots.disk_usage_figure`."""
    return [(labels[e.run], e.status, e.size_bytes if e.link_to is None else 0) for e in entries]


def picker_options(entries: Sequence[IndexEntry], labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """path -> selectbox label for the Inspect page, in index order (run, then step):
    `lightning-run / checkpoints/last.ckpt · step 192`, with the status when it is not ok. `labels` are
    the entries' `run_labels` when the caller has them already."""
    if labels is None:
        labels = run_labels(entries)
    out: dict[str, str] = {}
    for e in entries:
        label = f"{labels[e.run]} / {checkpoint_label(e)}"
        if e.step is not None:
            label += f" · step {e.step:,}"
        elif e.epoch is not None:
            label += f" · epoch {e.epoch:g}"
        if e.status != "ok":
            label += f" · {e.status}"
        elif e.safe is False:
            label += " · unsafe"
        out[e.path] = label
    return out


# ---------------------------------------------------------------------------------------------- text


def scan_line(n_checkpoints: int, parsed: int, reused: int, n_errors: int, seconds: float) -> str:
    """The line shown after a scan.

    >>> scan_line(28, 24, 4, 1, 0.546)
    '28 checkpoints (24 read, 4 unchanged), 1 error in 0.55 s'
    """
    ckpts = f"{n_checkpoints:,} checkpoint{'' if n_checkpoints == 1 else 's'}"
    errs = f"{n_errors:,} error{'' if n_errors == 1 else 's'}"
    return f"{ckpts} ({parsed:,} read, {reused:,} unchanged), {errs} in {seconds:.2f} s"


def ago(seconds: float) -> str:
    """A coarse age: 'just now', '42 s ago', '5 min ago', '3 h ago', '2 days ago'.

    >>> [ago(s) for s in (0.4, 42, 330, 3 * 3600 + 5, 2 * 86400)]
    ['just now', '42 s ago', '5 min ago', '3 h ago', '2 days ago']
    """
    if seconds < 1:
        return "just now"
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // div)} {unit} ago"
    days = int(seconds // 86400)
    return f"{plural(days, 'day')} ago"


@dataclass(frozen=True)
class ScanReport:
    """What one or more scans (one per root) found, for the line shown after a scan."""

    n_roots: int
    n_checkpoints: int
    parsed: int
    reused: int
    n_errors: int
    seconds: float
    notes: tuple[str, ...] = ()  # roots that do not exist, a demo that could not be built, ...

    @property
    def line(self) -> str:
        return scan_line(self.n_checkpoints, self.parsed, self.reused, self.n_errors, self.seconds)


def missing_roots(result: ScanResult) -> list[tuple[str, str]]:
    """(root, error) for each root of a scan that could not be scanned at all (it does not exist...)."""
    return [(p, e) for p, e in result.errors if p in result.roots]


def scan_report(results: Sequence[ScanResult], notes: Sequence[str] = ()) -> ScanReport:
    """Sum `scan()` results; a root that does not exist becomes a note (`PATH: no such file or directory`)."""
    missing = [f"{p}: {e}" for r in results for p, e in missing_roots(r)]
    return ScanReport(
        n_roots=sum(len(r.roots) for r in results),
        n_checkpoints=sum(len(r.entries) for r in results),
        parsed=sum(r.parsed for r in results),
        reused=sum(r.reused for r in results),
        n_errors=sum(len(r.errors) for r in results),
        seconds=sum(r.seconds for r in results),
        notes=(*notes, *missing),
    )
