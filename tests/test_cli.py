"""CLI: `ckptlab inspect ... --json` documents, exit codes, one-line errors, `python -m ckptlab`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ui_fixtures import write_safetensors

from ckptlab.cli import build_parser, main, render_entries
from ckptlab.model import IndexEntry

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
