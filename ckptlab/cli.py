"""The thin CLI: parse arguments, call the library, print text or exactly one JSON document.

Exit codes: 0 success, 1 the failure a command exists to detect (unreadable file...), 2 usage error.
Known errors print one line `error: PATH: cause`; set CKPTLAB_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import __version__
from .errors import CkptlabError
from .layouts import stage
from .model import CheckpointMeta, human_bytes, human_count

Handler = Callable[[argparse.Namespace], int]


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")


def _err(msg: str) -> None:
    sys.stderr.write(f"error: {printable(msg)}\n")


def printable(text: str) -> str:
    """Names come from untrusted files: escape control characters (terminal escapes, newlines) and lone
    surrogates so that what is printed is one inert line that any terminal encoding accepts."""
    if text.isprintable() and text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


# ---------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    from .formats import read_meta

    meta = read_meta(args.path)
    stats = None
    if args.stats:
        from .analysis.stats import all_stats

        def progress(done: int, total: int, name: str) -> None:
            if sys.stderr.isatty():
                sys.stderr.write(f"\rstats {done}/{total} {name[:60]:<60}")
                if done == total:
                    sys.stderr.write("\n")

        stats = all_stats(meta, device=args.device, progress=progress)
    if args.json:
        doc = meta.to_json()
        if stats is not None:
            doc["stats"] = [s.to_json() for s in stats]
        _emit_json(doc)
    else:
        print(render_inspect(meta, limit=None if args.all else args.limit))
        if stats is not None:
            print(render_stats(stats))
    return 0


def render_inspect(meta: CheckpointMeta, limit: int | None = 40) -> str:
    """Human summary of a checkpoint: header, safety, dtypes, entries, tensor table."""
    short, exact = human_count(meta.n_params), f"{meta.n_params:,}"
    # the exact count only where the short form rounds it (`6.35K params (6,354)`), never `225 params (225)`
    params = f"{short} params" + (f" ({exact})" if short != exact else "")
    lines = [
        f"{meta.path}",
        f"  format    {meta.format} ({meta.layout}{', ' + meta.framework if meta.framework else ''})",
        f"  size      {human_bytes(meta.size_bytes)} in {len(meta.files)} file(s)",
        f"  tensors   {meta.n_tensors} model tensors, {params}, {human_bytes(meta.tensor_bytes)}",
    ]
    if meta.other_tensors:
        other_bytes = sum(t.nbytes for t in meta.other_tensors)
        lines.append(f"  other     {len(meta.other_tensors)} non-model tensors, {human_bytes(other_bytes)}")
    if meta.dtypes:
        lines.append("  dtypes    " + ", ".join(f"{k} {human_count(v)}" for k, v in meta.dtypes.items()))
    at = stage(meta.path, meta.step, meta.epoch, meta.metrics)  # as the index shows it: content, then name

    step = "-" if at.step is None else f"{at.step}{at.note('step')}"
    epoch = "-" if at.epoch is None else f"{at.epoch}{at.note('epoch')}"
    lines.append(f"  step      {step}   epoch {epoch}")
    if at.metrics:
        lines.append("  metrics   " + ", ".join(f"{k}={v:.6g}{at.note(k)}" for k, v in at.metrics.items()))
    flags = {"optimizer": meta.has_optimizer, "scheduler": meta.has_scheduler, "rng": meta.has_rng_state}
    lines.append("  state     " + "  ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()))
    if meta.safety.safe:
        lines.append("  safety    safe (only allowlisted globals)")
    else:
        lines.append(f"  safety    UNSAFE: {meta.safety.headline()}")
        for f in meta.safety.grouped_findings():  # a long list of globals wraps under its finding
            # escaped before wrapping: wrap would turn a name's newline into a space
            lines += textwrap.wrap(
                printable(f), 110, initial_indent=" " * 12 + "- ", subsequent_indent=" " * 14,
                break_long_words=False, break_on_hyphens=False,
            )  # fmt: skip
    for w in meta.warnings:
        lines.append(f"  warning   {w}")
    if meta.tied:
        for names in meta.tied.values():
            lines.append(f"  tied      {' = '.join(names)}")
    if meta.entries:
        lines.append("")
        lines.append("  entries")
        # both columns as wide as their longest cell (a long kind, `training_args`, must not run into its
        # summary), measured on the escaped text that is printed, as in `render_entries`
        cells = [(printable(e.name), printable(e.kind), e.summary) for e in meta.entries]
        w, wk = (max(len(c[i]) for c in cells) for i in (0, 1))
        lines.extend(f"    {name:<{w}}  {kind:<{wk}}  {summary}" for name, kind, summary in cells)
    if meta.tensors:
        lines.append("")
        shown = meta.tensors if limit is None else meta.tensors[:limit]
        w = min(60, max(len(t.name) for t in shown))
        lines.append(f"  {'tensor':<{w}}  {'shape':<20} {'dtype':<14} {'params':>12}")
        for t in shown:
            lines.append(f"  {t.name:<{w}}  {list(t.shape)!s:<20} {t.dtype:<14} {t.numel:>12,}")
        if limit is not None and len(meta.tensors) > limit:
            lines.append(f"  … {len(meta.tensors) - limit} more (use --all)")
    # every line escaped on its own: a newline inside a name from the file stays `\n`, never a line of its
    # own (a forged `safety    safe` under the real verdict)
    return "\n".join(map(printable, lines))


def render_stats(stats: Sequence[Any]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    w = min(60, max((len(s.name) for s in stats), default=6))
    cols = "".join(f"{c:>11}" for c in ("min", "max", "mean", "std", "norm")) + f"{'nan':>7}{'inf':>7}"
    lines = ["", f"  {'tensor':<{w}} {cols}"]
    for s in stats:
        vals = "".join(f"{f(v):>11}" for v in (s.min, s.max, s.mean, s.std, s.norm))
        lines.append(f"  {s.name:<{w}} {vals}{s.nan_count:>7}{s.inf_count:>7}")
    return "\n".join(map(printable, lines))


# ---------------------------------------------------------------- scan / ls


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .index.store import Store

    return Store(args.db)  # None -> CKPTLAB_DB or the user cache dir


def cmd_scan(args: argparse.Namespace) -> int:
    from .index.scan import scan
    from .index.views import missing_roots, scan_line

    def progress(phase: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{phase} {done}/{total}")
            if done == total:
                sys.stderr.write("\n")

    with _store(args) as store:
        result = scan(args.roots, store, workers=args.workers, progress=progress)
    if args.json:
        _emit_json(result.to_json())
    else:
        print(render_entries(result.entries))
        for path, err in result.errors:
            sys.stderr.write(f"warning: {printable(f'{path}: {err}')}\n")
        n, n_errors = len(result.entries), len(result.errors)
        line = scan_line(n, result.parsed, result.reused, n_errors, result.seconds)
        print(f"\n{line}; {result.files_seen:,} files seen")
    return 1 if missing_roots(result) else 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .index.views import match_runs, run_labels

    if args.run is not None and not args.run.strip():
        # as a path, "" would be the current directory and list its run: a usage error, not a query
        _err("--run needs a run: its path or its name as `ckptlab ls` shows it")
        return 2
    with _store(args) as store:
        # every row, also for --run: the run is matched by the label the full table shows it under, and the
        # filtered table keeps those labels (the table needs no inspect documents)
        entries = store.entries(with_meta=False)
        errors = store.errors()
    labels = run_labels(entries)
    problem = None
    if args.run is not None:
        runs = set(match_runs(args.run, labels))
        entries = [e for e in entries if e.run in runs]
        if not entries:
            problem = _no_run_line(args.run, labels)
    if args.json:
        _emit_json(
            {
                "checkpoints": [e.to_json() for e in entries],
                "errors": [{"path": p, "error": e} for p, e in errors],
            }
        )
    elif entries:
        print(render_entries(entries, labels))
    elif problem is None:
        print(_EMPTY_INDEX)
    if problem is not None:
        _err(problem)
        return 1
    return 0


_EMPTY_INDEX = "the index is empty: run `ckptlab scan ROOT` first"


def _no_run_line(query: str, labels: Mapping[str, str]) -> str:
    """One line: no run matches `query`, and which runs there are (all when few, else the closest)."""
    from .index.views import closest_runs

    if not labels:
        return f"--run {query}: no run matches: {_EMPTY_INDEX}"
    names = list(dict.fromkeys(labels.values()))
    line = f"--run {query}: no run matches"
    if len(names) <= 8:
        return f"{line}; the runs are: {', '.join(names)}"
    # a folder holding runs (the path `out/lightning`, the table's `lightning`) is no run, but its runs are
    # what the user is after
    where, above = os.path.realpath(os.path.expanduser(query)), query.rstrip("/") + "/"
    inside = [
        label for run, label in labels.items() if run.startswith(where + os.sep) or label.startswith(above)
    ]
    if inside:
        more = f", … ({len(inside)} in all)" if len(inside) > 5 else ""
        return f"{line}; the runs inside it are: {', '.join(inside[:5])}{more}"
    close = closest_runs(query, labels)
    similar = f"; similar: {', '.join(close)}" if close else ""
    return f"{line}{similar} ({len(names)} runs: `ckptlab ls` shows them in its run column)"


_SAFETY_WORDS = {"safe": "safe", "unsafe": "UNSAFE", "unchecked": "-"}  # views.safety_class -> table


def render_entries(entries: Sequence[Any], labels: Mapping[str, str] | None = None) -> str:
    """A table of index rows: run, checkpoint, step, epoch, format, size, params, safety, status. Cells are
    escaped (`printable`) before the columns are measured, so an escaped name does not shift the others.

    Runs are shown by `labels` (default: `views.run_labels` of `entries`, as the app shows them): the path
    relative to the root, so two `version_0` runs read `csv/version_0` and `tb/version_0`."""
    from .index.views import checkpoint_label, run_labels, safety_class

    if not entries:
        return "no checkpoints found"
    if labels is None:
        labels = run_labels(entries)
    rows = []
    for e in entries:
        run = labels[e.run]
        safe = _SAFETY_WORDS[safety_class(e)]
        status = e.status if e.status == "ok" else f"{e.status}: {e.reason}"
        cells = (
            run,
            checkpoint_label(e),
            "-" if e.step is None else str(e.step),
            "-" if e.epoch is None else f"{e.epoch:g}",
            e.format or "-",
            human_bytes(e.size_bytes),
            "-" if e.n_params is None else human_count(e.n_params),
            safe,
            status,
        )
        rows.append(tuple(printable(c) for c in cells))
    head = ("run", "checkpoint", "step", "epoch", "format", "size", "params", "safety", "status")
    widths = [min(48, max(len(r[i]) for r in [head, *rows])) for i in range(len(head) - 1)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(head, widths, strict=False)) + "  status"]
    for r in rows:
        # a long run label keeps its end, the folders that tell runs apart; other cells keep their start
        run = r[0] if len(r[0]) <= widths[0] else "…" + r[0][len(r[0]) - widths[0] + 1 :]
        cells = (run, *(_fit(c, w) for c, w in zip(r[1:], widths[1:], strict=False)))
        lines.append("  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=False)) + "  " + r[-1])
    return "\n".join(lines)  # the cells were escaped above, before their widths were taken


def _fit(cell: str, width: int) -> str:
    """`cell` cut to `width` with `…` where it is cut. A link's label keeps the link's name and the end of
    its target, the file name that tells targets apart:

    >>> _fit("checkpoints/imported.ckpt → ../../run1/checkpoints/epoch=2-step=12.ckpt", 48)
    'checkpoints/imported.ckpt → …poch=2-step=12.ckpt'
    >>> _fit("checkpoints/epoch=10-step=4000-val_loss=0.1234-v1.ckpt", 40)
    'checkpoints/epoch=10-step=4000-val_loss…'
    """
    if len(cell) <= width:
        return cell
    name, arrow, target = cell.partition(" → ")
    room = width - len(name) - len(arrow) - 1  # for the target's end, after its `…`
    if arrow and room >= 12:
        return f"{name}{arrow}…{target[len(target) - room :]}"
    return cell[: width - 1] + "…"


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import ensure_demo

    # ensure_demo: an existing complete demo is reused, so re-running the command is harmless
    root = ensure_demo(Path(args.dir), progress=lambda msg: sys.stderr.write(msg + "\n"))
    if args.json:
        _emit_json({"root": str(root)})
    else:
        print(root)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptlab", description="Inspect model checkpoints safely, from headers alone."
    )
    p.add_argument("--version", action="version", version=f"ckptlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ins = sub.add_parser(
        "inspect",
        help="what is in one checkpoint (file or directory), without executing it",
        description="Show format, tensors, params by dtype, step/epoch, metrics, saved state and safety.",
    )
    ins.add_argument("path", help="checkpoint file, sharded index.json, HF checkpoint-N/ or DCP directory")
    ins.add_argument("--json", action="store_true", help="print one JSON document")
    ins.add_argument("--stats", action="store_true", help="add per-tensor min/max/mean/std/norm/NaN/Inf")
    ins.add_argument("--device", default="auto", help="device for --stats: auto, cpu, cuda, cuda:N")
    ins.add_argument("--limit", type=int, default=40, help="tensors shown in the text table (default 40)")
    ins.add_argument("--all", action="store_true", help="show every tensor in the text table")
    ins.set_defaults(func=cmd_inspect)

    db_help = "index database (default: $CKPTLAB_DB or the user cache dir)"
    sc = sub.add_parser(
        "scan",
        help="index checkpoint directories into the SQLite index (incremental)",
        description="Index the checkpoints under ROOTs (logical checkpoints; unchanged ones are reused).",
    )
    sc.add_argument("roots", nargs="+", metavar="ROOT", help="directories to scan")
    sc.add_argument("--db", default=None, help=db_help)
    sc.add_argument(
        "--workers", type=int, default=8, help="parallel readers (default 8; more for network storage)"
    )
    sc.add_argument("--json", action="store_true", help="print one JSON document")
    sc.set_defaults(func=cmd_scan)

    ls = sub.add_parser("ls", help="list the index without scanning", description="List indexed checkpoints.")
    ls.add_argument(
        "--run",
        default=None,
        help="only this run: its path, its name in the table (`csv/version_0`, `org/name`) or folder name",
    )
    ls.add_argument("--db", default=None, help=db_help)
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=cmd_ls)

    demo = sub.add_parser(
        "demo",
        help="train a tiny model for real and write a demo tree of checkpoints",
        description="Writes plain PyTorch, Lightning-, HF-Trainer- and Keras-shaped runs, sharded and DCP.",
    )
    demo.add_argument("dir", help="directory to create the demo in")
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    demo.set_defaults(func=cmd_demo)
    return p


def _quiet_bytearray_bug(hook: Any) -> Any:
    """CPython (3.11) prints "SystemError: deallocated bytearray object has exported buffers" through
    sys.excepthook when it fails to allocate a bytearray (its error path frees a half-built object): a
    pickle declaring a huge BYTEARRAY8 triggers it inside the C unpickler, before ckptlab falls back to its
    own walker and reports the file in one line. Only that message is dropped; everything else reaches the
    original hook."""

    def quiet(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if kind is SystemError and "has exported buffers" in str(value):
            return
        hook(kind, value, tb)

    quiet.ckptlab_quiet = True  # type: ignore[attr-defined]
    return quiet


def main(argv: Sequence[str] | None = None) -> int:
    if not getattr(sys.excepthook, "ckptlab_quiet", False):
        sys.excepthook = _quiet_bytearray_bug(sys.excepthook)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CkptlabError as e:
        if os.environ.get("CKPTLAB_DEBUG"):
            traceback.print_exc()
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
