"""The index: scan every layout (with debris and bad files mixed in) into SQLite, incrementally."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_state_dict, training_checkpoint, write_hf_checkpoint, write_sharded_safetensors

from ckptlab.cli import main
from ckptlab.index.scan import scan
from ckptlab.index.store import MIGRATIONS, Store

torch = pytest.importorskip("torch")
OLD = time.time() - 3600  # files older than the settle window


def _age(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.utime(p, (OLD, OLD))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A shared box's checkpoint tree: four runs in different layouts plus the usual debris."""
    root = tmp_path / "runs"
    plain = root / "plain"
    plain.mkdir(parents=True)
    for e in (1, 2, 10):
        ck = training_checkpoint() | {"epoch": e}
        torch.save(ck, plain / f"checkpoint_epoch_{e}.pth")
    (plain / "broken.pt").write_bytes(os.urandom(256))
    (plain / "empty.pt").write_bytes(b"")
    (plain / "notes.txt").write_text("not a checkpoint")
    (plain / "model_best.pth.tmp").write_bytes(b"partial")

    lit = root / "lit" / "lightning_logs" / "version_0" / "checkpoints"
    lit.mkdir(parents=True)
    torch.save(
        {"epoch": 0, "global_step": 99, "state_dict": small_state_dict()}, lit / "epoch=0-step=99.ckpt"
    )
    torch.save(
        {"epoch": 1, "global_step": 100, "state_dict": small_state_dict()}, lit / "epoch=1-step=100.ckpt"
    )
    os.symlink("epoch=9-step=900.ckpt", lit / "last.ckpt")  # dangling

    hf = root / "hf"
    write_hf_checkpoint(hf / "checkpoint-500", step=500)
    write_hf_checkpoint(hf / "checkpoint-1000", step=1000)
    (hf / "tmp-checkpoint-1500").mkdir()
    (hf / "tmp-checkpoint-1500" / "model.safetensors").write_bytes(b"")

    exp = root / "export"
    exp.mkdir()
    write_sharded_safetensors(exp)
    bad_export = root / "export-broken"
    bad_export.mkdir()
    write_sharded_safetensors(bad_export)
    (bad_export / "model-00002-of-00002.safetensors").unlink()

    import torch.distributed.checkpoint as dcp

    with pytest.warns(UserWarning):
        dcp.save(
            {"model": training_checkpoint()["model_state_dict"], "step": 40},
            checkpoint_id=str(root / "dcp" / "step_40"),
        )
    _age(root)
    return root


def _by_name(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {os.path.relpath(e.path, result.roots[0]): e for e in result.entries}


def test_scan_every_layout(tree: Path, tmp_path: Path) -> None:
    with Store(tmp_path / "index.sqlite") as store:
        result = scan([tree], store)
    got = _by_name(result)
    assert sorted(got) == sorted(
        [
            "plain/checkpoint_epoch_1.pth",
            "plain/checkpoint_epoch_2.pth",
            "plain/checkpoint_epoch_10.pth",
            "plain/broken.pt",
            "plain/empty.pt",
            "plain/model_best.pth.tmp",
            "lit/lightning_logs/version_0/checkpoints/epoch=0-step=99.ckpt",
            "lit/lightning_logs/version_0/checkpoints/epoch=1-step=100.ckpt",
            "lit/lightning_logs/version_0/checkpoints/last.ckpt",
            "hf/checkpoint-500",
            "hf/checkpoint-1000",
            "hf/tmp-checkpoint-1500",
            "export/model.safetensors.index.json",
            "export-broken/model.safetensors.index.json",
            "dcp/step_40",
        ]
    )
    status = {k: (e.status, e.layout) for k, e in got.items()}
    assert status["hf/checkpoint-500"] == ("ok", "hf-checkpoint")
    assert status["export/model.safetensors.index.json"] == ("ok", "sharded")
    assert status["dcp/step_40"] == ("ok", "dcp")
    assert status["plain/broken.pt"][0] == "unreadable"
    assert status["export-broken/model.safetensors.index.json"] == ("incomplete", "sharded")
    for debris in ("plain/empty.pt", "plain/model_best.pth.tmp", "hf/tmp-checkpoint-1500",
                   "lit/lightning_logs/version_0/checkpoints/last.ckpt"):  # fmt: skip
        assert got[debris].status == "debris", debris
    assert got["plain/empty.pt"].reason == "zero-byte file"
    assert got["lit/lightning_logs/version_0/checkpoints/last.ckpt"].reason.startswith("dangling symlink")
    assert "model-00002-of-00002.safetensors" in got["export-broken/model.safetensors.index.json"].reason
    # runs: Lightning's is the parent of checkpoints/, HF's the output dir
    assert got["lit/lightning_logs/version_0/checkpoints/epoch=0-step=99.ckpt"].run == str(
        tree / "lit" / "lightning_logs" / "version_0"
    )
    assert got["hf/checkpoint-500"].run == str(tree / "hf")
    # step/epoch from content first, then names; numeric order, never string order
    hf_steps = [e.step for e in result.entries if e.run == str(tree / "hf") and e.status == "ok"]
    assert hf_steps == [500, 1000]
    plain_epochs = [e.epoch for e in result.entries if e.run == str(tree / "plain") and e.status == "ok"]
    assert plain_epochs == [1, 2, 10]
    lit_steps = [e.step for e in result.entries if "version_0" in e.run and e.status == "ok"]
    assert lit_steps == [99, 100]
    assert got["hf/checkpoint-1000"].metrics["eval_loss"] == 0.9
    assert got["hf/checkpoint-1000"].size_bytes == sum(
        f.stat().st_size for f in (tree / "hf" / "checkpoint-1000").iterdir()
    )
    # errors: the unreadable file with its cause
    assert [p for p, _ in result.errors] == [str(tree / "plain" / "broken.pt")]
    assert result.files_seen >= 20 and result.parsed == 10 and result.reused == 0


def test_incremental_and_vanished(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    with Store(db) as store:
        first = scan([tree], store)
        again = scan([tree], store)
        # everything unchanged is reused (the incomplete sharded set too); only debris is derived again
        assert again.parsed == 0
        # an unchanged unreadable file is still reported on every scan, and stays in the index's errors
        assert again.errors == first.errors == [(str(tree / "plain" / "broken.pt"), first.errors[0][1])]
        assert store.errors() == again.errors
        assert again.reused == sum(e.status != "debris" for e in first.entries) == first.parsed + 1
        assert [e.path for e in again.entries] == [e.path for e in first.entries]
        target = tree / "plain" / "checkpoint_epoch_2.pth"
        torch.save(training_checkpoint() | {"epoch": 2, "loss": 0.125}, target)
        os.utime(target, (OLD + 60, OLD + 60))
        (tree / "plain" / "checkpoint_epoch_10.pth").unlink()
        third = scan([tree], store)
        assert third.parsed == 1
        paths = {e.path for e in store.entries()}
        assert str(tree / "plain" / "checkpoint_epoch_10.pth") not in paths
        changed = next(e for e in store.entries() if e.path == str(target))
        assert changed.metrics["loss"] == 0.125


def test_recently_modified_is_debris(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    torch.save({"w": torch.ones(2)}, root / "fresh.pt")
    with Store(tmp_path / "db.sqlite") as store:
        now = time.time()
        e = scan([root], store, now=now, settle_seconds=30).entries[0]
        assert e.status == "debris" and "may still be being written" in e.reason
        e = scan([root], store, now=now + 60, settle_seconds=30).entries[0]
        assert e.status == "ok"


def test_unreadable_directory_is_an_error_not_a_crash(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.scandir
    blocked = str(tree / "hf")

    def scandir(path):  # type: ignore[no-untyped-def]
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([tree], store)
    assert (blocked, "cannot read directory: Permission denied") in result.errors
    assert any(e.path.endswith("checkpoint_epoch_1.pth") for e in result.entries)


def test_symlinks_do_not_leave_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    torch.save({"w": torch.ones(1)}, outside / "secret.pt")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked_dir")
    os.symlink(outside / "secret.pt", root / "link.pt")
    torch.save({"w": torch.ones(1)}, root / "own.pt")
    _age(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([root], store)
    assert [Path(e.path).name for e in result.entries] == ["own.pt"]


def test_store_schema_and_queries(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    with Store(db) as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.migrate() == []  # idempotent
        scan([tree], store)
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with_tensor = store.checkpoints_with_tensor("encoder.0.weight")
        assert with_tensor == sorted(
            [str(tree / "export" / "model.safetensors.index.json")]
            + [
                str(p)
                for p in (tree / "lit" / "lightning_logs" / "version_0" / "checkpoints").glob("epoch=*.ckpt")
            ]
        )
        runs = {r.name: r for r in store.runs()}
        assert runs["hf"].n_checkpoints == 3 and runs["hf"].last_step == 1000
        assert runs["plain"].size_bytes == sum(e.size_bytes for e in store.entries(run="plain"))
        assert [t.name for t in store.tensors(str(tree / "plain" / "checkpoint_epoch_1.pth"))] == [
            "0.weight", "0.bias", "2.weight", "2.bias",
        ]  # fmt: skip
    # another process (another connection) sees the same index while the first is open
    a, b = Store(db), sqlite3.connect(db)
    assert b.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == len(a.entries())
    a.close()
    b.close()


def test_two_processes_share_the_index(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    code = (
        "from ckptlab.index.store import Store; from ckptlab.index.scan import scan\n"
        f"scan([{str(tree)!r}], Store({str(db)!r}))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Store(db) as store:
        assert len(store.entries()) == 15


def test_scan_does_not_import_torch(tree: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from ckptlab.index.store import Store; from ckptlab.index.scan import scan\n"
        f"scan([{str(tree)!r}], Store({str(tmp_path / 'x.sqlite')!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_scan_and_ls(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "cli.sqlite"
    assert main(["scan", str(tree), "--db", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"roots", "checkpoints", "errors", "stats"}
    assert doc["roots"] == [str(tree.resolve())]
    assert set(doc["stats"]) == {"files_seen", "checkpoints", "parsed", "reused", "seconds"}
    assert doc["stats"]["checkpoints"] == 15
    row = next(c for c in doc["checkpoints"] if c["path"].endswith("checkpoint-1000"))
    assert {k: row[k] for k in ("layout", "format", "step", "status", "safe", "n_params")} == {
        "layout": "hf-checkpoint", "format": "safetensors", "step": 1000, "status": "ok", "safe": True,
        "n_params": 58,
    }  # fmt: skip
    assert doc["errors"][0]["path"].endswith("broken.pt")
    monkeypatch.setenv("CKPTLAB_DB", str(db))
    assert main(["ls", "--run", "hf", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(c["path"]).name for c in listed["checkpoints"]] == [
        "checkpoint-500",
        "checkpoint-1000",
        "tmp-checkpoint-1500",
    ]
    assert main(["ls"]) == 0
    text = capsys.readouterr().out
    assert "checkpoint-1000" in text and "debris: zero-byte file" in text


def test_cli_scan_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "nope"), "--db", str(tmp_path / "db.sqlite"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"] == [
        {"path": str((tmp_path / "nope").resolve()), "error": "no such file or directory"}
    ]
