"""CLI: `ckptlab inspect ... --json` documents, exit codes, one-line errors, `python -m ckptlab`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from ui_fixtures import backdate, write_safetensors

from ckptlab.cli import build_parser, main, render_entries, render_inspect
from ckptlab.model import CheckpointMeta, Entry, IndexEntry, TensorMeta

DOC_KEYS = {
    "path",
    "format",
    "layout",
    "framework",
    "size_bytes",
    "files",
    "tensors",
    "n_tensors",
    "n_params",
    "dtypes",
    "step",
    "epoch",
    "metrics",
    "has_optimizer",
    "has_scheduler",
    "has_rng_state",
    "metadata",
    "entries",
    "tied",
    "n_other_tensors",
    "safety",
    "warnings",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptlab", *args], capture_output=True, text=True, timeout=120
    )


def test_inspect_json_document(train_pt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(train_pt), "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert set(doc) == DOC_KEYS
    assert doc["format"] == "torch-zip" and doc["n_tensors"] == 4 and doc["n_params"] == 58
    assert doc["tensors"][0] == {"name": "0.weight", "shape": [8, 4], "dtype": "float32", "nbytes": 128}
    assert doc["dtypes"] == {"float32": 58}
    assert (doc["step"], doc["epoch"]) == (300, 3)
    assert doc["metrics"] == {"loss": 0.25, "val_acc": 0.875}
    assert doc["safety"] == {"safe": True, "unsafe_globals": [], "findings": [], "unverified": []}
    assert {e["name"] for e in doc["entries"]} >= {
        "optimizer_state_dict",
        "scheduler_state_dict",
        "rng_state",
    }
    assert out.err == ""


def test_inspect_stats_json(zip_pt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(zip_pt), "--json", "--stats", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    stats = {s["name"]: s for s in doc["stats"]}
    assert set(stats) == {t["name"] for t in doc["tensors"]}
    assert stats["head.scale"]["min"] == 0.5 and stats["head.scale"]["max"] == 1.5
    assert stats["proj.weight"]["max"] == 5.0 and stats["proj.weight"]["device"] == "cpu"


def test_inspect_text(lightning_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(lightning_ckpt)]) == 0
    text = capsys.readouterr().out
    assert "format    torch-zip (file, lightning)" in text
    assert "step      300   epoch 2" in text
    assert "best_model_score=0.125" in text
    assert "safety    safe" in text
    assert "model.0.weight" in text


def test_inspect_text_params_and_entries_columns() -> None:
    """The exact count is repeated only when the short form rounds it, and the entries' kind column is as
    wide as its longest kind (HF's `training_args` ran into its summary)."""

    def meta(*shapes: tuple[int, ...], entries: tuple[Entry, ...] = ()) -> CheckpointMeta:
        tensors = tuple(TensorMeta(f"t{i}", s, "float32", 4 * math.prod(s)) for i, s in enumerate(shapes))
        return CheckpointMeta("/r/m.safetensors", "safetensors", 1, tensors, entries=entries)

    assert "  tensors   2 model tensors, 225 params, 900 B\n" in render_inspect(meta((15, 14), (15,)))
    text = render_inspect(meta((6354,)))
    assert "  tensors   1 model tensors, 6.35K params (6,354), 24.8 KiB\n" in text
    assert ", 1K params (1,000)," in render_inspect(meta((1000,)))
    hf = (
        Entry("model.safetensors", "weights", "safetensors, 41 tensors"),
        Entry("training_args.bin", "training_args", "torch-zip, 0 tensors"),
        Entry("trainer_state.json", "trainer_state", "3 log entries"),
    )
    lines = render_inspect(meta((2,), entries=hf)).split("\n")
    at = lines.index("  entries")
    assert lines[at + 1 : at + 4] == [
        "    model.safetensors   weights        safetensors, 41 tensors",
        "    training_args.bin   training_args  torch-zip, 0 tensors",
        "    trainer_state.json  trainer_state  3 log entries",
    ]


def test_inspect_text_fills_step_and_metrics_from_the_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the checkpoint does not hold comes from its name, as in the index, and is marked as such."""
    path = write_safetensors(tmp_path / "epoch=4-step=500-val_loss=0.25.safetensors")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "step      500 (from the name)   epoch 4 (from the name)" in out
    assert "val_loss=0.25 (from the name)" in out
    assert main(["inspect", str(path), "--json"]) == 0  # the JSON document keeps to the content
    doc = json.loads(capsys.readouterr().out)
    assert (doc["step"], doc["epoch"], doc["metrics"]) == (None, None, {})


def test_unsafe_file_exits_zero_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    p = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), p)
    assert main(["inspect", str(p)]) == 0
    assert "UNSAFE: torch.nn.modules.linear.Linear" in capsys.readouterr().out


def test_one_files_pickle_references_are_listed_together(capsys: pytest.CaptureFixture[str]) -> None:
    """A real HF Trainer folder: training_args.bin's nine globals come as one finding, wrapped under it, and
    the verdict line names the first three instead of repeating them all."""
    d = Path(__file__).parent / "data" / "real" / "hf" / "checkpoint-12"
    assert main(["inspect", str(d)]) == 0
    out = capsys.readouterr().out
    verdict = next(line for line in out.splitlines() if line.startswith("  safety"))
    assert verdict.startswith("  safety    UNSAFE: transformers.training_args.TrainingArguments, ")
    assert verdict.endswith(" and 6 more")
    block = out.split(verdict + "\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[0] == (
        "            - training_args.bin: pickle references 9 globals outside the allowlist "
        "(not imported or called):"
    )
    assert all(line.startswith(" " * 14) and len(line) <= 110 for line in block[1:])
    listed = " ".join(block[1:]).replace(",", " ").split()
    assert len(listed) == 9 and "accelerate.state.PartialState" in listed


def test_unverified_part_is_named_in_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An HF checkpoint whose optimizer.pt cannot be read at all: never called safe, and the verdict says
    which part was not checked (not an empty `UNSAFE: `)."""
    d = tmp_path / "checkpoint-10"
    d.mkdir()
    write_safetensors(d / "model.safetensors")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    (d / "optimizer.pt").write_bytes(b"\x00 not a checkpoint at all")
    assert main(["inspect", str(d)]) == 0
    assert "  safety    UNSAFE: optimizer.pt (not checked)\n" in capsys.readouterr().out


def test_untrusted_names_are_escaped_in_scan_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name holding a terminal escape reaches neither stdout nor stderr raw, and the table's columns are
    measured on the escaped text (the next column does not shift)."""
    evil = "m\x1b[31mred.safetensors"
    rows = [
        IndexEntry(f"/r/run/{name}", "/r/run", "/r", "file", "ok", "", format="safetensors", step=step)
        for name, step in ((evil, 7), ("plain.safetensors", 8))
    ]
    head, bad, plain = render_entries(rows).split("\n")
    assert "\x1b" not in bad and "m\\x1b[31mred.safetensors" in bad
    assert bad.index("7 ") == plain.index("8 ") == head.index("step")
    missing = tmp_path / "gone\x1b[2J"
    assert main(["scan", str(missing), "--db", str(tmp_path / "db.sqlite")]) == 1
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err
    assert "warning: " in out.err and "gone\\x1b[2J: no such file or directory" in out.err


# ---------------------------------------------------------------- ls


def write_runs(root: Path, *runs: str) -> dict[str, str]:
    """One safetensors checkpoint per run folder under `root` (a Lightning `checkpoints/` file for runs
    ending in `version_N`, a hub cache snapshot for `models--...`), dated back; run -> its resolved path."""
    paths = {}
    for run in runs:
        d = root / run
        if run.rsplit("/", 1)[-1].startswith("models--"):
            d = d / "snapshots" / "r1"
        elif "version_" in run:
            d = d / "checkpoints"
        d.mkdir(parents=True)
        write_safetensors(d / ("epoch=0-step=4.safetensors" if "version_" in run else "model.safetensors"))
        paths[run] = str((root / run).resolve())
    backdate(root)
    return paths


@pytest.fixture
def ls_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, str]]:
    """An index of two Lightning runs both called `version_0`, a plain run and a hub cache repo."""
    runs = write_runs(
        tmp_path / "out",
        "lightning/csv/version_0",
        "lightning/tb/version_0",
        "plain",
        "hub/models--org--tiny",
    )
    db = tmp_path / "index.sqlite"
    assert main(["scan", str(tmp_path / "out"), "--db", str(db), "--json"]) == 0
    capsys.readouterr()
    return db, runs


def ls_runs_listed(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, set[str]]:
    """(exit code, the runs `ckptlab ls --json` lists)."""
    code = main(["ls", "--db", str(db), "--json", *args])
    return code, {c["run"] for c in json.loads(capsys.readouterr().out)["checkpoints"]}


def test_ls_run_takes_paths_as_typed_and_names_as_shown(
    ls_runs: tuple[Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, runs = ls_runs
    csv, tb = runs["lightning/csv/version_0"], runs["lightning/tb/version_0"]
    (tmp_path / "link").symlink_to(tmp_path / "out" / "lightning")
    monkeypatch.chdir(tmp_path)
    cases = {
        "out/lightning/csv/version_0": {csv},  # relative to the cwd
        "./out/lightning/csv/version_0/": {csv},
        "out/lightning/tb/../csv/version_0": {csv},
        f"{tb}/": {tb},  # absolute, trailing slash
        "link/tb/version_0": {tb},  # through a symlink
        "version_0": {csv, tb},  # a name two runs share: both
        "csv/version_0": {csv},  # the end of the path
        "lightning/tb/version_0": {tb},  # the table's label
        "org/tiny": {runs["hub/models--org--tiny"]},  # a hub repo as the table shows it
        "models--org--tiny/": {runs["hub/models--org--tiny"]},
        "plain": {runs["plain"]},
        str(tmp_path / "out" / "plain"): {runs["plain"]},  # the stored path as before
    }
    for query, expected in cases.items():
        assert ls_runs_listed(db, capsys, "--run", query) == (0, expected), query
    monkeypatch.chdir(tmp_path / "out" / "lightning" / "tb")
    assert ls_runs_listed(db, capsys, "--run", "version_0") == (0, {tb})  # a path that is a run wins
    assert ls_runs_listed(db, capsys, "--run", "../csv/version_0") == (0, {csv})
    monkeypatch.chdir(tb)
    assert ls_runs_listed(db, capsys, "--run", ".") == (0, {tb})
    # the table tells the two `version_0` runs apart, also when it is filtered to them
    assert main(["ls", "--db", str(db), "--run", "version_0"]) == 0
    table = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in table[1:] if line] == [
        "lightning/csv/version_0",
        "lightning/tb/version_0",
    ]


def test_ls_run_without_a_match_says_so_and_exits_1(
    ls_runs: tuple[Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, _runs = ls_runs
    monkeypatch.chdir(tmp_path)
    every = "org/tiny, lightning/csv/version_0, lightning/tb/version_0, plain"
    # `./version_0` is a path (none here), not the name; a typo matches nothing
    for query in ("version_1", "./version_0", str(tmp_path / "version_0")):
        assert main(["ls", "--db", str(db), "--run", query]) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err == f"error: --run {query}: no run matches; the runs are: {every}\n"
    assert main(["ls", "--db", str(db), "--run", "version_1", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out) == {"checkpoints": [], "errors": []}  # still exactly one document
    assert out.err.count("\n") == 1 and "no run matches" in out.err
    # a truly empty index still says so, and fails only when a run was asked for
    empty = str(tmp_path / "empty.sqlite")
    assert main(["ls", "--db", empty]) == 0
    assert capsys.readouterr().out == "the index is empty: run `ckptlab scan ROOT` first\n"
    assert main(["ls", "--db", empty, "--run", "plain"]) == 1
    out = capsys.readouterr()
    assert (out.out, out.err) == (
        "",
        "error: --run plain: no run matches: the index is empty: run `ckptlab scan ROOT` first\n",
    )


@pytest.mark.parametrize("query", ["", "  "])
def test_ls_empty_run_is_a_usage_error(
    ls_runs: tuple[Path, dict[str, str]],
    query: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a path, "" is the current directory: inside a run it would list that run, not fail."""
    db, runs = ls_runs
    monkeypatch.chdir(runs["plain"])
    assert main(["ls", "--db", str(db), "--run", query]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "error: --run needs a run: its path or its name as `ckptlab ls` shows it\n"


def test_long_checkpoint_cells_are_cut_with_an_ellipsis() -> None:
    """A link's label keeps the link's name and the end of its target; other long cells keep their start."""
    target = "/r/run1/checkpoints/epoch=2-step=12-val_loss=2.89.ckpt"
    long = "/r/run1/checkpoints/epoch=10-step=4000-val_loss=0.1234-v1-final.ckpt"
    rows = [
        IndexEntry("/r/run2/checkpoints/imported.ckpt", "/r/run2", "/r", "file", "ok", "", link_to=target),
        IndexEntry(long, "/r/run1", "/r", "file", "ok", ""),
    ]
    cells = [line.split("  ")[1] for line in render_entries(rows).split("\n")[1:]]
    assert cells == [
        "checkpoints/imported.ckpt → …-val_loss=2.89.ckpt",
        "checkpoints/epoch=10-step=4000-val_loss=0.1234-…",
    ]
    assert all(len(c) == 48 for c in cells)


def test_ls_run_without_a_match_among_many_runs_names_the_closest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "out"
    write_runs(root, *(f"sweep/exp_{i:02}" for i in range(10)))
    db = str(tmp_path / "index.sqlite")
    assert main(["scan", str(root), "--db", db, "--json"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["ls", "--db", db, "--run", "exp_1"]) == 1
    err = capsys.readouterr().err
    assert err == (  # the closest first, ties in the table's order, at most 5
        "error: --run exp_1: no run matches; similar: sweep/exp_01, sweep/exp_00, sweep/exp_02, "
        "sweep/exp_03, sweep/exp_04 (10 runs: `ckptlab ls` shows them in its run column)\n"
    )
    # a folder holding runs is no run: its runs are named, whether it is given as a path or as in the table
    for query in ("out/sweep/", "out", "sweep"):
        assert main(["ls", "--db", db, "--run", query]) == 1
        assert capsys.readouterr().err == (
            f"error: --run {query}: no run matches; the runs inside it are: sweep/exp_00, sweep/exp_01, "
            "sweep/exp_02, sweep/exp_03, sweep/exp_04, … (10 in all)\n"
        )


def test_table_tells_runs_of_the_same_name_apart() -> None:
    """The run column shows the path relative to the root (as the app does), a hub repo as `org/name`, and a
    label too long for the column keeps its end."""
    deep = "/r/" + "/".join(f"sweep_{i}" for i in range(8)) + "/version_0"
    rows = [
        IndexEntry(f"{run}/checkpoints/last.ckpt", run, "/r", "file", "ok", "", format="torch-zip")
        for run in ("/r/csv/version_0", "/r/tb/version_0", "/r/hub/models--org--tiny", deep)
    ]
    lines = render_entries(rows).split("\n")
    assert [line.split("  ")[0].strip() for line in lines] == [
        "run",
        "csv/version_0",
        "tb/version_0",
        "org/tiny",
        "…" + deep[-47:],
    ]
    assert lines[-1].startswith("…eep_3/sweep_4/sweep_5/sweep_6/sweep_7/version_0  checkpoints/last.ckpt")


def test_errors_are_one_line_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    for target, cause in (
        (bad, "safetensors header length 16 runs past the end of the file (9 bytes)"),
        (tmp_path / "missing.pt", "no such file or directory"),
    ):
        r = run("inspect", str(target), "--json")
        assert r.returncode == 1
        assert r.stdout == ""
        assert r.stderr == f"error: {target}: {cause}\n"


def test_usage_error_exit_2() -> None:
    r = run("inspect")
    assert r.returncode == 2 and "usage:" in r.stderr
    assert run("frobnicate").returncode == 2


def test_debug_env_shows_traceback(tmp_path: Path) -> None:
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "ckptlab", "inspect", str(p)], capture_output=True, text=True,
                       env={**__import__("os").environ, "CKPTLAB_DEBUG": "1"})  # fmt: skip
    assert (
        r.returncode == 1
        and "Traceback" in r.stderr
        and r.stderr.endswith(f"error: {p}: empty file (0 bytes)\n")
    )


def test_console_script_installed(safetensors_file: Path) -> None:
    r = subprocess.run(
        ["ckptlab", "inspect", str(safetensors_file), "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == "safetensors"


def test_every_command_is_documented_in_readme() -> None:
    """sqlite-utils' habit: a command missing from the README fails the suite."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"ckptlab {name}" in readme, f"README does not document `ckptlab {name}`"
    for key in DOC_KEYS:
        assert f"`{key}`" in readme, f"README does not document the JSON field `{key}`"
