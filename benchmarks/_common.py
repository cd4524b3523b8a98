"""Shared helpers for ckptlab's benchmarks: subprocess timing, peak RSS, page-cache warming, tables, JSON.

Every benchmark follows the same recipe so its numbers can be compared:

* each measurement runs in a **fresh Python subprocess** (`measure`): the library under test is imported and
  warmed up on a tiny input *before* the timer starts, so import time, lazy imports and first-call costs are
  never counted, and no state (allocator, GC, caches) leaks from one repeat to the next;
* the repeats of the sides of one comparison are **interleaved** (`measure_interleaved`), so load from other
  processes hits both alike;
* the files are **warm** on both sides: `warm_page_cache` reads them once before every repeat (dropping the
  page cache needs root, so both sides are measured warm instead);
* each side is repeated and its **median** is reported; a ratio is `baseline median / ckptlab median`;
* **peak RSS** is measured in the same subprocess: the kernel's high-water mark (VmHWM) is reset after the
  imports and warm-up, so the reported delta is what the timed statement itself added on top of the warmed
  interpreter (falls back to the growth of `ru_maxrss` where `/proc/self/clear_refs` is not writable).

Only the standard library is imported here, so a benchmark's parent process stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

MARK = "@@BENCH@@"  # a child process's report: this, then JSON, on one line of its output (see `marked`)

# The worker program `measure` runs in a fresh interpreter. {setup}, {warmup}, {stmt} and {extra} are the
# caller's code; `_result` is the value of the timed statement's last assignment if it makes one.
_WORKER = """
import gc, json, resource, sys, time

def _status():
    out = {{}}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out

def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

{setup}
{warmup}
gc.collect()
_method = "VmHWM" if _reset_hwm() and "VmHWM" in _status() else "ru_maxrss"
_st0 = _status()
_rss_before = _st0.get("VmRSS", 0)
_maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
_times = []
_cpu = []
for _i in range({inner}):
    _c0 = time.process_time()
    _t0 = time.perf_counter()
{stmt}
    _times.append(time.perf_counter() - _t0)
    _cpu.append(time.process_time() - _c0)
_st1 = _status()
_maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if _method == "VmHWM":
    _peak = _st1["VmHWM"]
    _delta = _peak - _rss_before
else:
    _peak = _maxrss_after
    _delta = _maxrss_after - _maxrss_before
_extra = {extra}
print({mark!r} + json.dumps({{
    "times": _times, "cpu_times": _cpu, "peak_rss": _peak, "rss_delta": max(0, _delta), "rss_method": _method,
    "rss_before": _rss_before, "modules": sorted(m for m in ("torch", "numpy", "safetensors")
                                                  if m in sys.modules),
    "extra": _extra,
}}, default=str))
"""


# ---------------------------------------------------------------- statistics and formatting


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(r: float | None) -> str:
    if r is None or r != r:
        return "—"
    return f"{r:,.0f}×" if r >= 100 else f"{r:.1f}×"


def fmt_rss(delta: float | None, peak: float | None) -> str:
    """'+1.2 MiB (peak 45.0 MiB)': what the measured statement added, and the process's absolute peak."""
    if delta is None:
        return "—" if peak is None else f"peak {fmt_bytes(peak)}"
    return f"+{fmt_bytes(delta)} (peak {fmt_bytes(peak)})"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)


# ---------------------------------------------------------------- machine, data, files


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": cores,
        "ram_bytes": ram,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": package_version("torch"),
        "safetensors": package_version("safetensors"),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_start": _loadavg(),
        "git": git_state(),
    }


def git_state() -> str | None:
    """'abc1234' or 'abc1234 + uncommitted changes in ckptlab/': which code was measured."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ckptlab"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" + uncommitted changes in ckptlab/" if dirty.stdout.strip() else "")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_note(info: Mapping[str, Any]) -> str:
    """One line on how busy the machine was (start and now); a warning when it exceeds the cores."""
    start, end = info.get("loadavg_start"), _loadavg()
    if not start or not end:
        return "Load average: unknown."
    busiest = max(start[0], end[0])
    warn = (
        f" WARNING: above the {info['cores']} cores, other processes competed for the CPU; rerun when quiet."
        if info.get("cores") and busiest > info["cores"]
        else ""
    )
    return f"Load average (1 min): {start[0]:.2f} at start, {end[0]:.2f} at the end.{warn}"


def machine_line(info: Mapping[str, Any]) -> str:
    ram = f"{info['ram_bytes'] / GiB:.0f} GiB RAM" if info.get("ram_bytes") else "RAM unknown"
    return (
        f"Machine: {info['cores']} cores, {ram}, {info['cpu']}; Python {info['python']}, "
        f"torch {info.get('torch') or 'not installed'}, safetensors {info.get('safetensors') or '-'}; "
        f"{info['date']}; ckptlab at {info.get('git') or 'unknown commit'}"
    )


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def data_dir(name: str) -> Path:
    """`benchmarks/_data/<name>` (git-ignored), or `$CKPTLAB_BENCH_DATA/<name>`; created if missing."""
    root = Path(os.environ.get("CKPTLAB_BENCH_DATA") or BENCH_DIR / "_data")
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_disk_space(path: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(path).free
    if free < need_bytes * 1.2:
        raise SystemExit(
            f"not enough disk space in {path}: need about {fmt_bytes(need_bytes)}, {fmt_bytes(free)} free "
            "(set CKPTLAB_BENCH_DATA to another directory)"
        )


def warm_page_cache(*paths: os.PathLike[str] | str) -> None:
    """Read each file once, in 8 MiB chunks into one buffer, so it sits in the page cache (cheap on RSS)."""
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(view):
                pass


def write_json(path: os.PathLike[str] | str, doc: Any) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")


def cached_manifest(path: Path, want: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON document at `path` (a data directory's manifest) when it exists and has `want`'s value for
    every key of `want` (generator version, size, torch version...), else None: the data must be made anew."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return doc if {k: doc.get(k) for k in want} == want else None


def marked(output: str, mark: str = MARK) -> Any:
    """The JSON after `mark` on the first line of `output` that starts with it; None if no line does."""
    for line in output.splitlines():
        if line.startswith(mark):
            return json.loads(line[len(mark) :])
    return None


def run_marked(argv: Sequence[str], what: str, timeout: float | None = None) -> Any:
    """Run `argv` and return the JSON it printed after `MARK`; exit with its stderr if it failed."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    doc = marked(r.stdout)
    if r.returncode != 0 or doc is None:
        raise SystemExit(f"{what} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return doc


# ---------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """Repeats of one statement, each in a fresh process: times (s) and memory (bytes)."""

    label: str
    times: list[float] = field(default_factory=list)  # wall clock
    cpu_times: list[float] = field(default_factory=list)  # process CPU time (less hurt by a busy machine)
    rss_deltas: list[int] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    rss_method: str = ""
    modules: list[str] = field(default_factory=list)
    extra: Any = None

    @property
    def median(self) -> float:
        return median(self.times)

    @property
    def rss_delta(self) -> int | None:
        return int(median(self.rss_deltas)) if self.rss_deltas else None

    @property
    def peak(self) -> int | None:
        return int(median(self.peaks)) if self.peaks else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            median_s=self.median,
            cpu_median_s=median(self.cpu_times),
            rss_delta_median=self.rss_delta,
            peak_rss_median=self.peak,
        )
        return d


def _indent(code: str, n: int) -> str:
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", " " * n)


def run_worker(
    stmt: str,
    setup: str = "",
    warmup: str = "",
    extra: str = "None",
    inner: int = 1,
) -> dict[str, Any]:
    """Run `setup`, `warmup` (untimed), then time `stmt` `inner` times in one fresh interpreter.

    `extra` is an expression evaluated after timing (it can use `_result` if `stmt` assigns it) whose
    JSON-able value comes back in the report, e.g. to check the statement did what it should.
    """
    code = _WORKER.format(
        setup=_indent(setup, 0),
        warmup=_indent(warmup, 0),
        stmt=_indent(stmt, 4),
        extra=extra,
        inner=int(inner),
        mark=MARK,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    report = marked(proc.stdout)
    if report is not None:
        return report
    raise RuntimeError(
        f"benchmark worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n--- statement ---\n{stmt}"
    )


@dataclass
class Spec:
    """One side of a comparison: code strings run by `run_worker` (see `measure`)."""

    label: str
    stmt: str
    setup: str = ""
    warmup: str = ""
    warm_files: Sequence[os.PathLike[str] | str] = ()
    extra: str = "None"


def measure_interleaved(specs: Sequence[Spec], repeats: int = 5) -> list[Measurement]:
    """`repeats` rounds; each round runs every spec once, each in a fresh process, in an order rotated from
    round to round. Interleaving means a burst of load from other processes hits both sides of a
    comparison alike instead of biasing whichever side happened to run during it."""
    ms = [Measurement(s.label) for s in specs]
    for i in range(repeats):
        shift = i % len(specs)
        for j in [*range(shift, len(specs)), *range(shift)]:
            spec, m = specs[j], ms[j]
            if spec.warm_files:
                warm_page_cache(*spec.warm_files)
            r = run_worker(spec.stmt, setup=spec.setup, warmup=spec.warmup, extra=spec.extra)
            m.times.extend(r["times"])
            m.cpu_times.extend(r["cpu_times"])
            m.rss_deltas.append(r["rss_delta"])
            m.peaks.append(r["peak_rss"])
            m.rss_method = r["rss_method"]
            m.modules = r["modules"]
            m.extra = r["extra"]
            log(f"  {spec.label}: repeat {i + 1}/{repeats} {fmt_seconds(r['times'][0])}")
    return ms


def measure(spec: Spec, repeats: int = 5) -> Measurement:
    """`repeats` fresh processes, each running `spec.setup` and `spec.warmup` untimed, then timing
    `spec.stmt` once; `spec.warm_files` are read into the page cache before each repeat."""
    return measure_interleaved([spec], repeats)[0]


@dataclass
class CommandRun:
    wall: float
    returncode: int
    stdout: str
    stderr: str


def run_command(cmd: Sequence[str], timeout: float = 120) -> CommandRun:
    """Run a command: wall clock from spawn to exit (on timeout: child killed, TimeoutExpired raised)."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, timeout=timeout, cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    return CommandRun(
        wall, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


_HWM_WRAPPER = """
import atexit, runpy, sys

def _report():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    sys.stderr.write("{mark}HWM %d\\n" % (int(line.split()[1]) * 1024))
    except OSError:
        pass
    sys.stderr.flush()

atexit.register(_report)
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def module_peak_rss(module: str, args: Sequence[str]) -> int | None:
    """Peak RSS (VmHWM, bytes) of `python -m MODULE ARGS...` in a fresh interpreter, read at exit.

    `ru_maxrss` from wait4 is not usable for this: Linux carries the parent's high-water mark across
    fork/vfork + exec, so a small CLI spawned by a big benchmark process would report the parent's peak.
    """
    r = run_command([sys.executable, "-c", _HWM_WRAPPER.format(mark=MARK), module, *args])
    return marked(r.stderr, MARK + "HWM ")


# ---------------------------------------------------------------- results


@dataclass
class Row:
    """One line of a benchmark table: ckptlab against a baseline measured in the same run."""

    case: str
    baseline: str
    baseline_m: Measurement | None
    ckptlab_m: Measurement | None
    target: str  # e.g. '≥ 500×', '< 0.5 s', 'False'
    passed: bool | None = None
    ratio: float | None = None
    ckptlab_value: str | None = None  # overrides the ckptlab median cell (e.g. a boolean check)
    note: str = ""
    key: str = ""  # short id for notes under the table, e.g. '2-meta'
    inverse: bool = False  # `ratio` is ckptlab / baseline (lower is better), and so is `cpu_ratio`

    @classmethod
    def ratio_row(
        cls,
        case: str,
        baseline: str,
        base: Measurement,
        ours: Measurement,
        min_ratio: float,
        note: str = "",
        key: str = "",
    ) -> Row:
        r = base.median / ours.median if ours.median > 0 else float("inf")
        return cls(case, baseline, base, ours, f"≥ {min_ratio:g}×", r >= min_ratio, r, note=note, key=key)

    @classmethod
    def max_seconds_row(cls, case: str, ours: Measurement, limit: float, baseline: str = "—") -> Row:
        return cls(case, baseline, None, ours, f"< {limit:g} s", ours.median < limit)

    def cells(self) -> list[str]:
        b, o = self.baseline_m, self.ckptlab_m
        result = "—" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return [
            self.case,
            self.baseline,
            fmt_seconds(b.median) if b else "—",
            self.ckptlab_value or (fmt_seconds(o.median) if o else "—"),
            fmt_ratio(self.ratio),
            self.target,
            result,
            fmt_rss(o.rss_delta, o.peak) if o else "—",
            fmt_rss(b.rss_delta, b.peak) if b else "—",
        ]

    @property
    def cpu_ratio(self) -> float | None:
        """The same ratio on process CPU time: less distorted when other processes compete for the CPU.
        Baseline / ckptlab, or ckptlab / baseline for an `inverse` row, like `ratio`."""
        b, o = self.baseline_m, self.ckptlab_m
        if not (b and o and b.cpu_times and o.cpu_times) or self.ratio is None:
            return None
        if self.inverse:
            return median(o.cpu_times) / max(median(b.cpu_times), 1e-9)
        return median(b.cpu_times) / max(median(o.cpu_times), 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "case": self.case,
            "baseline": self.baseline,
            "target": self.target,
            "passed": self.passed,
            "ratio": self.ratio,
            "cpu_ratio": self.cpu_ratio,
            "ckptlab_value": self.ckptlab_value,
            "note": self.note,
            "baseline_measurement": self.baseline_m.to_json() if self.baseline_m else None,
            "ckptlab_measurement": self.ckptlab_m.to_json() if self.ckptlab_m else None,
        }


TABLE_HEADERS = (
    "case",
    "baseline",
    "baseline median",
    "ckptlab median",
    "ratio",
    "target",
    "result",
    "peak RSS ckptlab",
    "peak RSS baseline",
)


def results_table(rows: Sequence[Row]) -> str:
    return markdown_table(TABLE_HEADERS, (r.cells() for r in rows))


def parse_args(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Add the options every benchmark has (`--json FILE`, `--data-dir DIR`) to `ap` and parse `argv`;
    `--data-dir` is exported as CKPTLAB_BENCH_DATA, which `data_dir` (and so any child process) reads."""
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    ap.add_argument("--data-dir", type=Path, help="where to generate the files (default benchmarks/_data)")
    args = ap.parse_args(argv)
    if args.data_dir:
        os.environ["CKPTLAB_BENCH_DATA"] = str(args.data_dir)
    return args


def report(
    name: str,
    mode: str,
    info: Mapping[str, Any],
    rows: Sequence[Row],
    notes: Sequence[str],
    *,
    repeats: int,
    json_path: str | None,
    json_extra: Mapping[str, Any],
    result_note: str = "",
    appendix: str = "",
) -> int:
    """Print the standard report (heading, machine line, table, `notes` and the load average as bullets,
    the verdict, then `appendix`) and, with `json_path`, write it with `json_extra` as JSON.
    Returns the exit status: 1 when a row failed its target, else 0."""
    print(f"## ckptlab {name} benchmark ({mode})\n")
    print(machine_line(info) + "\n")
    print(results_table(rows))
    print()
    for n in [*notes, load_note(info)]:
        print(f"- {n}")
    failed = [r for r in rows if r.passed is False]
    verdict = "all targets PASS" if not failed else f"{len(failed)} of {len(rows)} rows FAIL their target"
    print(f"- Result: {verdict}.{result_note}")
    if appendix:
        print(appendix)
    if json_path:
        doc = {"benchmark": name, "mode": mode, "repeats": repeats, "machine": info, **json_extra}
        write_json(json_path, doc | {"rows": [r.to_json() for r in rows], "table": results_table(rows)})
        log(f"wrote {json_path}")
    return 1 if failed else 0


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
