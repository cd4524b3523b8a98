"""The index: scan every layout (with debris and bad files mixed in) into SQLite, incrementally."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError, fields, replace
from pathlib import Path
from types import MappingProxyType

import pytest
from adversarial import ReduceTo
from conftest import small_state_dict, training_checkpoint, write_hf_checkpoint, write_sharded_safetensors
from ui_fixtures import backdate

from ckptlab.cli import main
from ckptlab.formats import read_meta
from ckptlab.index.entries import meta_document
from ckptlab.index.migrations import MIGRATIONS
from ckptlab.index.scan import scan
from ckptlab.index.store import Store
from ckptlab.layouts import in_run_order, order_key
from ckptlab.model import CheckpointMeta, Entry, IndexEntry, Safety, TensorMeta, new_entry

torch = pytest.importorskip("torch")
OLD = time.time() - 3600  # files older than the settle window


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
    backdate(root)
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
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([root], store)
    assert [Path(e.path).name for e in result.entries] == ["own.pt"]
    # the checkpoint-named link is reported (the directory link is just not walked)
    target = os.path.realpath(outside / "secret.pt")
    assert result.errors == [(str(root / "link.pt"), f"symlink to {target}, outside the root: not followed")]


def test_a_shard_linked_from_outside_the_root_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_sharded_safetensors(root)
    shard = root / "model-00002-of-00002.safetensors"
    shard.rename(tmp_path / shard.name)
    os.symlink(tmp_path / shard.name, shard)
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([root], store).entries
    why = "missing shard(s): model-00002-of-00002.safetensors (a link out of the root)"
    assert (row.status, row.reason) == ("incomplete", why)
    # the same through a linked folder in the shard's name
    shard.unlink()
    os.symlink(tmp_path, root / "sub")
    index = root / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"] = {k: v.replace("model-00002", "sub/model-00002") for k, v in doc["weight_map"].items()}
    index.write_text(json.dumps(doc))
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([root], store).entries
    assert (row.status, row.reason) == (
        "incomplete",
        "missing shard(s): sub/model-00002-of-00002.safetensors (a link out of the root)",
    )
    assert [Path(p).name for p, _, _ in row.files] == [index.name, "model-00001-of-00002.safetensors"]


def _blob(blobs: Path, data: bytes) -> str:
    """Store `data` as the hub cache does, under its sha256; returns the name."""
    name = hashlib.sha256(data).hexdigest()
    (blobs / name).write_bytes(data)
    return name


def _hub_cache(tmp_path: Path) -> Path:
    """The Hugging Face hub cache as `huggingface_hub` lays it out: content-addressed blobs, and per
    revision a snapshot folder of relative links into them (a sharded revision and a single-file one)."""
    from safetensors.torch import save

    repo = tmp_path / "hub" / "models--org--tiny"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    sd = {k: v.contiguous().clone() for k, v in small_state_dict().items()}  # untied, as safetensors wants
    names = list(sd)
    links: dict[str, dict[str, str]] = {"rev1": {}, "rev2": {}}
    for i, keys in enumerate((names[:2], names[2:]), 1):
        shard = save({k: sd[k] for k in keys}, metadata={"format": "pt"})
        links["rev1"][f"model-0000{i}-of-00002.safetensors"] = _blob(blobs, shard)
    index = {
        "metadata": {},
        "weight_map": {k: f"model-0000{1 + (k in names[2:])}-of-00002.safetensors" for k in names},
    }
    links["rev1"]["model.safetensors.index.json"] = _blob(blobs, json.dumps(index).encode())
    links["rev2"]["model.safetensors"] = _blob(blobs, save(sd, metadata={"format": "pt"}))
    config = _blob(blobs, b'{"model_type": "gpt2"}')
    for rev, files in links.items():
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        for name, blob in {**files, "config.json": config}.items():
            os.symlink(Path("..", "..", "blobs", blob), snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev2")
    backdate(tmp_path)
    return tmp_path / "hub"


def test_hub_cache_lists_each_revision_once_under_its_links(tmp_path: Path) -> None:
    hub = _hub_cache(tmp_path)
    repo = hub / "models--org--tiny"
    blobs = repo / "blobs"
    single_bytes = (repo / "snapshots" / "rev2" / "model.safetensors").read_bytes()
    (blobs / f"{'0' * 64}.incomplete").write_bytes(single_bytes[:100])  # a download under way
    orphan = _blob(blobs, single_bytes + b" ")  # a blob no snapshot links to any more (a trailing byte)
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([hub], store)
    assert result.errors == [(str(blobs / orphan), "1 trailing bytes after the last tensor")]
    got = {e.path: e for e in result.entries}
    sharded = str(repo / "snapshots" / "rev1" / "model.safetensors.index.json")
    single = str(repo / "snapshots" / "rev2" / "model.safetensors")
    # no linked blob listed a second time under its hash; the others are the repository's too
    assert sorted(got) == sorted(
        [str(blobs / f"{'0' * 64}.incomplete"), str(blobs / orphan), sharded, single]
    )
    assert got[str(blobs / f"{'0' * 64}.incomplete")].status == "debris"
    assert got[str(blobs / orphan)].status == "unreadable"
    assert got[sharded].layout == "sharded" and got[single].layout == "file"
    assert [Path(p).name for p, _, _ in got[sharded].files] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert {e.run for e in result.entries} == {str(repo)}  # the repository, its revisions the series
    assert (
        got[sharded].n_params == got[single].n_params == sum(v.numel() for v in small_state_dict().values())
    )
    assert got[single].size_bytes == len(single_bytes)  # the target's size
    assert got[single].link_to is None  # its blob is not listed: the snapshot's row holds the bytes


def test_cli_table_names_a_hub_run_by_its_repo_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = _hub_cache(tmp_path)
    assert main(["scan", str(hub), "--db", str(tmp_path / "db.sqlite")]) == 0
    rows = capsys.readouterr().out.splitlines()[1:3]
    assert sorted(r.split()[:2] for r in rows) == [
        ["org/tiny", "snapshots/rev1/model.safetensors.index.json"],
        ["org/tiny", "snapshots/rev2/model.safetensors"],
    ]


def test_links_to_files_with_names_of_their_own_keep_every_row(tmp_path: Path) -> None:
    # only a digest-named blob is left out for its link; a link with no suffix, a hidden or .txt link, or a
    # part of an HF folder linking to a file with a name of its own lose nothing
    for run in ("a", "b", "c"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        torch.save({"w": torch.ones(2)}, tmp_path / "runs" / run / "model_final")
    os.symlink("model_final", tmp_path / "runs" / "a" / ".latest")
    os.symlink("model_final", tmp_path / "runs" / "b" / "latest.txt")
    os.symlink("model_final", tmp_path / "runs" / "c" / "current")
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([tmp_path / "runs"], store)
    got = sorted(str(Path(e.path).relative_to(tmp_path / "runs")) for e in result.entries)
    assert got == ["a/model_final", "b/model_final", "c/current", "c/model_final"]


def test_a_snapshot_folder_that_is_a_trainer_checkpoint_is_of_the_repository(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--org--ft" / "snapshots" / "r1"
    write_hf_checkpoint(snap)
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([tmp_path / "hub"], store).entries
    assert (row.path, row.layout, row.run) == (str(snap), "hf-checkpoint", str(snap.parent.parent))


def test_a_snapshot_folder_alone_names_the_links_it_does_not_follow(tmp_path: Path) -> None:
    snap = _hub_cache(tmp_path) / "models--org--tiny" / "snapshots" / "rev2"
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([snap], store)
    assert result.entries == []
    target = os.path.realpath(snap / "model.safetensors")
    assert result.errors == [
        (str(snap / "model.safetensors"), f"symlink to {target}, outside the root: not followed")
    ]


def test_a_link_to_a_named_checkpoint_keeps_both_rows(tmp_path: Path) -> None:
    # Lightning's save_last="link": last.ckpt points at the newest epoch=...ckpt; both names mean something
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save(training_checkpoint(), ckpts / "epoch=1-step=20.ckpt")
    os.symlink("epoch=1-step=20.ckpt", ckpts / "last.ckpt")
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([tmp_path / "run"], store)
    assert sorted(Path(e.path).name for e in result.entries) == ["epoch=1-step=20.ckpt", "last.ckpt"]
    assert {e.status for e in result.entries} == {"ok"}


def test_a_link_to_another_checkpoint_takes_no_bytes(tmp_path: Path) -> None:
    """last.ckpt -> epoch=2-step=40.ckpt: two rows, one file on disk. The link names its target, the run's
    bytes (store, summary, disk chart) count the file once, and re-pointing the link is a change even when
    both targets have the same size and mtime."""
    from ckptlab.index.views import checkpoint_label, summarize, usage_rows

    run = tmp_path / "run"
    run.mkdir()
    for name in ("epoch=1-step=20.ckpt", "epoch=2-step=40.ckpt"):
        torch.save(training_checkpoint(), run / name)
    os.symlink("epoch=2-step=40.ckpt", run / "last.ckpt")
    backdate(tmp_path)
    size = (run / "epoch=1-step=20.ckpt").stat().st_size
    mtime_ns = (run / "epoch=1-step=20.ckpt").stat().st_mtime_ns
    os.utime(run / "epoch=2-step=40.ckpt", ns=(mtime_ns, mtime_ns))
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([run], store)
        got = {Path(e.path).name: e for e in result.entries}
        last = got["last.ckpt"]
        assert last.link_to == str(run / "epoch=2-step=40.ckpt") and last.size_bytes == size
        assert got["epoch=1-step=20.ckpt"].link_to is None
        assert checkpoint_label(last) == "last.ckpt → epoch=2-step=40.ckpt"
        assert last.to_json()["link_to"] == str(run / "epoch=2-step=40.ckpt")
        assert summarize(result.entries).total_bytes == 2 * size
        assert sum(b for _, _, b in usage_rows(result.entries, {str(run): "run"})) == 2 * size
        (summary,) = store.runs()
        assert (summary.n_checkpoints, summary.size_bytes) == (3, 2 * size)
        assert {Path(e.path).name: e.link_to for e in store.entries()} == {
            n: e.link_to for n, e in got.items()
        }
        os.unlink(run / "last.ckpt")  # re-pointed: same size, same mtime, another checkpoint
        os.symlink("epoch=1-step=20.ckpt", run / "last.ckpt")
        again = scan([run], store)
        (relinked,) = [e for e in again.entries if e.path.endswith("last.ckpt")]
        assert relinked.link_to == str(run / "epoch=1-step=20.ckpt") and again.parsed == 1


def test_an_index_from_before_0004_reads_every_checkpoint_again(tmp_path: Path) -> None:
    """Rows are reused while files are unchanged; after the readers changed what they say of unchanged
    files, migration 0004 makes the next scan read everything once, then reuse as before."""
    run = tmp_path / "run"
    run.mkdir()
    for i in (1, 2):
        torch.save(training_checkpoint(), run / f"checkpoint_epoch_{i}.pth")
    backdate(tmp_path)
    with Store(tmp_path / "index.sqlite") as store:
        assert scan([run], store).parsed == 2
        assert scan([run], store).reused == 2
        # the index as a version before 0004 left it
        store.db.execute("DELETE FROM _migrations WHERE name LIKE '0004%'")
        store.db.commit()
    with Store(tmp_path / "index.sqlite") as store:
        assert scan([run], store).parsed == 2  # read again once
        assert scan([run], store).reused == 2


def test_an_index_from_before_0005_reads_sharded_torch_checkpoints_again(
    tmp_path: Path, sharded_torch_dir: Path
) -> None:
    """Migration 0005: the stored documents of torch-sharded rows named storages of different shards as tied
    weights; the next scan reads those rows again (and only those), and the document no longer says so."""
    root = sharded_torch_dir.parent
    torch.save(training_checkpoint(), root / "other.pth")
    backdate(root)
    with Store(tmp_path / "index.sqlite") as store:
        assert scan([root], store).parsed == 2
        # the index as a version before 0005 left it, with the wrong tie in the sharded row's document
        (sharded,) = [e for e in store.entries() if e.format == "torch-sharded"]
        doc = dict(sharded.meta or {}, tied={"0": ["a", "b"]})
        sql = "UPDATE checkpoints SET meta_json = ? WHERE path = ?"
        store.db.execute(sql, (json.dumps(doc), sharded.path))
        store.db.execute("DELETE FROM _migrations WHERE name LIKE '0005%'")
        store.db.commit()
    with Store(tmp_path / "index.sqlite") as store:
        again = scan([root], store)
        assert (again.parsed, again.reused) == (1, 1)
        (sharded,) = [e for e in store.entries() if e.format == "torch-sharded"]
        assert sharded.meta is not None and sharded.meta["tied"] == {}


@pytest.mark.parametrize("relative", [False, True], ids=["absolute_root", "relative_root"])
def test_a_link_to_a_part_names_the_checkpoint_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    """sh/model.safetensors -> hf/checkpoint-4/model.safetensors: the HF checkpoint's row counts those
    bytes, so the link names it; the same for a link to a shard of a sharded checkpoint."""
    from ckptlab.index.discover import discover
    from ckptlab.index.views import summarize

    root = tmp_path / "root"
    write_hf_checkpoint(root / "hf" / "checkpoint-4")
    (root / "sharded").mkdir()
    write_sharded_safetensors(root / "sharded")
    for name, target in (
        ("sh/model.safetensors", "../hf/checkpoint-4/model.safetensors"),
        ("sh2/part.safetensors", "../sharded/model-00001-of-00002.safetensors"),
    ):
        (root / name).parent.mkdir()
        os.symlink(target, root / name)
    where = str(root)
    if relative:  # the parts of a sharded checkpoint are joined by Path: `./x` becomes `x`
        monkeypatch.chdir(root)
        where = "."
    errors: list[tuple[str, str]] = []
    found, _ = discover(where, errors)
    got = {os.path.relpath(c.path, where): c.link_to and os.path.relpath(c.link_to, where) for c in found}
    assert got == {
        "hf/checkpoint-4": None,
        "sharded/model.safetensors.index.json": None,
        "sh/model.safetensors": "hf/checkpoint-4",
        "sh2/part.safetensors": "sharded/model.safetensors.index.json",
    }
    assert errors == []
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([root], store)
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    assert summarize(result.entries).total_bytes == on_disk  # each byte counted once


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


# ------------------------------------------------------------------- the scan's fast paths keep the results


# ckptlab.index.scan is not here: its examples are all +SKIP (they need a tree of checkpoints), so nothing
# would run; every case here must run at least one example
@pytest.mark.parametrize(
    "module,at_least",
    [("ckptlab.index.entries", 3), ("ckptlab.model", 4), ("ckptlab.cli", 2), ("ckptlab.ui.common", 3)],
)
def test_doctests(module: str, at_least: int) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted >= at_least > 0 and result.failed == 0


def test_stored_documents_are_the_inspect_documents(tree: Path, tmp_path: Path) -> None:
    """The scan builds each stored inspect document in one pass: `read_meta().to_json()` less tensors."""
    with Store(tmp_path / "index.sqlite") as store:
        scan([tree], store)
        ok = [e for e in store.entries() if e.status == "ok"]
    assert len(ok) == 9
    for e in ok:
        doc = read_meta(e.path).to_json()
        doc.pop("tensors")
        assert meta_document(read_meta(e.path)) == (doc, doc["n_params"]), e.path
        assert e.meta == json.loads(json.dumps(doc)), e.path  # as stored, after the JSON round trip


def test_meta_document_on_odd_values() -> None:
    meta = CheckpointMeta(
        "x.pt",
        "torch-zip",
        100,
        tensors=(
            TensorMeta("a", (2, 3), "float32", 24, storage="0"),
            TensorMeta("b", (2, 3), "float32", 24, storage="0"),  # tied to a
            TensorMeta("c", (4,), "bfloat16", 8, storage="1"),
            TensorMeta("d", (), "int64", 8),
        ),
        epoch=2.5,
        metrics={"loss": math.nan, "acc": math.inf},
        metadata={
            "t": (1, (2.0, -math.inf)),
            3: {"x": None, True: "y"},
            "proxy": MappingProxyType({"k": [1, 2]}),
            "path": Path("somewhere"),
            "big": 2**70,
        },
        entries=(Entry("optimizer", "optimizer", "Adam, 2 groups"),),
        safety=Safety(("posix.system",), ("data.pkl: posix.system",), ("optimizer.pt",)),
        files=("x.pt",),
        other_tensors=(TensorMeta("exp_avg", (2,), "float32", 8),),
        warnings=("odd",),
    )
    doc = meta.to_json()
    doc.pop("tensors")
    assert meta_document(meta) == (doc, 6 + 6 + 4 + 1)
    assert list(meta_document(meta)[0]) == list(doc)  # the same key order: the same stored JSON text


def test_rescan_gives_the_same_entries_as_the_first_scan(tree: Path, tmp_path: Path) -> None:
    with Store(tmp_path / "index.sqlite") as store:
        first = scan([tree], store)
        again = scan([tree], store)
        listed = {e.path: e for e in store.entries(with_meta=False)}
    assert again.parsed == 0
    assert [e.to_json() for e in again.entries] == [e.to_json() for e in first.entries]
    for cold, warm in zip(first.entries, again.entries, strict=True):
        # every field, files included: a reused entry takes its parts from this scan's stat calls, sorted by
        # path as the index lists them (a sharded set's fresh entry has them in index order)
        assert replace(cold, meta=None, files=tuple(sorted(cold.files))) == warm == listed[warm.path]


def test_fingerprints_are_those_of_earlier_versions(tree: Path, tmp_path: Path) -> None:
    """An index written before the scan was made faster is reused, not read again: same digests."""

    def digest(layout: str, parts: list[Path], missing: tuple[str, ...] = ()) -> str:
        h = hashlib.sha1(layout.encode())
        for p in parts:
            st = p.stat()
            h.update(f"{os.path.relpath(p, tree)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(("missing:" + ",".join(missing)).encode())
        return h.hexdigest()

    with Store(tmp_path / "index.sqlite") as store:
        got = {os.path.relpath(e.path, tree): e.fingerprint for e in scan([tree], store).entries}
    hf = tree / "hf" / "checkpoint-500"
    broken = tree / "export-broken"
    assert got["plain/checkpoint_epoch_1.pth"] == digest("file", [tree / "plain" / "checkpoint_epoch_1.pth"])
    assert got["hf/checkpoint-500"] == digest("hf-checkpoint", sorted(hf.iterdir()))
    assert got["export-broken/model.safetensors.index.json"] == digest(
        "sharded",
        [broken / "model.safetensors.index.json", broken / "model-00001-of-00002.safetensors"],
        ("model-00002-of-00002.safetensors",),
    )


def test_unchanged_debris_is_not_rewritten(tree: Path, tmp_path: Path) -> None:
    def indexed_at(store: Store, name: str) -> float:
        q = "SELECT indexed_at FROM checkpoints WHERE path = ?"
        return store.db.execute(q, (str(tree / "plain" / name),)).fetchone()[0]

    with Store(tmp_path / "index.sqlite") as store:
        scan([tree], store, now=time.time())
        before = indexed_at(store, "empty.pt"), indexed_at(store, "checkpoint_epoch_1.pth")
        again = scan([tree], store, now=time.time() + 10)
        assert (indexed_at(store, "empty.pt"), indexed_at(store, "checkpoint_epoch_1.pth")) == before
        assert next(e for e in again.entries if e.path.endswith("empty.pt")).reason == "zero-byte file"
        torch.save({"w": torch.ones(2)}, tree / "plain" / "empty.pt")  # no longer debris: read and rewritten
        os.utime(tree / "plain" / "empty.pt", (OLD, OLD))
        third = scan([tree], store, now=time.time() + 20)
        assert third.parsed == 1 and indexed_at(store, "empty.pt") > before[0]
        assert next(e for e in third.entries if e.path.endswith("empty.pt")).status == "ok"


@pytest.mark.parametrize("writer", ["other", "same"])
def test_vanished_rows_are_found_when_the_index_changed_meanwhile(
    tree: Path, tmp_path: Path, writer: str
) -> None:
    """save_scan works out the vanished rows from what the scan read, unless someone (another connection, or
    this one) wrote in between: then it asks the database."""
    db = tmp_path / "index.sqlite"
    with Store(db) as a, Store(db) as b:
        root = str(tree.resolve())
        first = scan([tree], a)
        stored = a.stored(root)
        keep = [e.path for e in first.entries]
        ghost = replace(first.entries[0], path=f"{root}/ghost.pt", files=((f"{root}/ghost.pt", 1, 1),))
        (b if writer == "other" else a).save_scan(root, [ghost], {}, [*keep, ghost.path], [], time.time())
        assert ghost.path in {e.path for e in a.entries()}
        a.save_scan(root, [], {}, keep, [], time.time(), stored)
        assert sorted(e.path for e in a.entries()) == sorted(keep)


def test_two_indexes_sharing_a_shard(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    idx = write_sharded_safetensors(root)
    (root / "model.safetensors.bak.index.json").write_text(idx.read_text())  # a copy naming the same shards
    backdate(root)
    with Store(tmp_path / "index.sqlite") as store:
        result = scan([root], store)
        assert [(Path(e.path).name, e.status) for e in result.entries] == [
            ("model.safetensors.bak.index.json", "ok"),
            ("model.safetensors.index.json", "ok"),
        ]
        n_files = store.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        assert n_files == 4  # each index, and each shard once (claimed by one of them)


def test_hdf5_found_by_content_whatever_its_name(tmp_path: Path) -> None:
    """Only `.h5`/`.hdf5` and suffix-less names are probed for the HDF5 batch; an HDF5 file under another
    name is still read as HDF5 (by read_meta), and a `.h5` holding safetensors as safetensors."""
    from h5_fixtures import write_generic
    from safetensors.torch import save_file

    root = tmp_path / "r"
    root.mkdir()
    write_generic(root / "model.h5")
    write_generic(root / "weights.pt")
    write_generic(root / "noext", userblock=512)
    save_file({"w": torch.ones(2)}, str(root / "really_safetensors.h5"))
    backdate(root)
    with Store(tmp_path / "index.sqlite") as store:
        got = {Path(e.path).name: (e.status, e.format) for e in scan([root], store).entries}
    assert got == {
        "model.h5": ("ok", "hdf5"),
        "weights.pt": ("ok", "hdf5"),
        "noext": ("ok", "hdf5"),
        "really_safetensors.h5": ("ok", "safetensors"),
    }


def test_a_suffixless_file_is_opened_once_to_find_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery looks at a name with no checkpoint suffix once (one open); the reading pool uses the kind
    it found instead of probing the file again. Only binary pickles count, not text that looks like one."""
    from h5_fixtures import write_generic

    from ckptlab.index import discover as discover_mod
    from ckptlab.index import reading

    root = tmp_path / "r"
    root.mkdir()
    torch.save(small_state_dict(), root / "model_legacy", _use_new_zipfile_serialization=False)
    torch.save(small_state_dict(), root / "model_zip")
    write_generic(root / "noext")
    write_generic(root / "model.h5")
    (root / "model_text").write_text("(dp0\nS'a'\np1\nI1\ns.")  # a protocol-0 pickle, or just text
    backdate(root)
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, *args, **kw):  # type: ignore[no-untyped-def]
        opened.append(os.fspath(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", counting_open)
    candidates, _ = discover_mod.discover(str(root), [])
    monkeypatch.setattr(os, "open", real_open)
    kinds = {Path(c.path).name: c.kind for c in candidates}
    assert kinds == {"model_legacy": "pickle", "model_zip": "zip", "noext": "hdf5", "model.h5": None}
    assert sorted(Path(p).name for p in opened) == ["model_legacy", "model_text", "model_zip", "noext"]

    probed: list[str] = []
    real_is_hdf5 = reading._is_hdf5
    monkeypatch.setattr(reading, "_is_hdf5", lambda p: probed.append(Path(p).name) or real_is_hdf5(p))
    with Store(tmp_path / "index.sqlite") as store:
        got = {Path(e.path).name: (e.status, e.format) for e in scan([root], store).entries}
    assert probed == ["model.h5"]
    assert got["noext"] == ("ok", "hdf5") and got["model.h5"] == ("ok", "hdf5")
    assert got["model_zip"] == ("ok", "torch-zip") and got["model_legacy"][0] == "ok"


def test_opening_an_up_to_date_index_takes_no_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    Store(db).close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # e.g. a scan in another process writing its results
    try:
        t0 = time.monotonic()
        with Store(db) as store:
            assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert time.monotonic() - t0 < 5  # not the 30 s busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_new_entry_is_the_constructors_entry() -> None:
    values = {f.name: None for f in fields(IndexEntry)} | {
        "path": "/r/a.pt", "run": "/r", "root": "/r", "layout": "file", "status": "ok", "fingerprint": "f",
        "files": (("/r/a.pt", 1, 2),), "metrics": {"loss": 0.5}, "unsafe_globals": (),
    }  # fmt: skip
    fast = new_entry(dict(values))
    assert fast == IndexEntry(**values) and repr(fast) == repr(IndexEntry(**values))
    assert hash(fast.path) == hash("/r/a.pt")
    with pytest.raises(FrozenInstanceError):
        fast.path = "x"  # type: ignore[misc]
    # a field left out: the constructor fills its default
    short = {k: v for k, v in values.items() if k != "meta"}
    assert new_entry(short) == IndexEntry(**short) and new_entry(short).meta is None


def test_scan_order_is_order_key_order() -> None:
    names = ["b.pt", "a.pt", "checkpoint-10", "checkpoint-9", "last.ckpt", "x-2.pt", "x-10.pt", "a.pt"]
    entries = [
        IndexEntry(f"/r/{run}/{name}", f"/r/{run}", "/r", "file", "ok", "f", step=step, epoch=epoch)
        for run in ("b", "a")
        for name in names
        for step, epoch in ((None, None), (5, None), (5, 1.5), (5, 1), (None, 2))
    ]
    expected = sorted(
        entries,
        key=lambda e: (
            e.run,
            *order_key(e.step, None if e.epoch is None else int(e.epoch), Path(e.path).name),
        ),
    )
    assert in_run_order(entries) == expected
    assert [id(e) for e in in_run_order(entries)] == [id(e) for e in expected]  # stable, as one sort would be


def test_scan_and_ls_order_names_that_tie_numerically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No step, no epoch: the names decide, compared numerically (v9 before v10), in the scan's result
    and in what the index lists afterwards (`ckptlab ls`, the app), never as strings."""
    root = tmp_path / "runs"
    root.mkdir()
    for v in (10, 9, 100):
        torch.save(small_state_dict(), root / f"model_v{v}.pt")
    backdate(root)
    db = tmp_path / "index.sqlite"
    assert main(["scan", str(root), "--db", str(db), "--json"]) == 0
    scanned = [Path(c["path"]).name for c in json.loads(capsys.readouterr().out)["checkpoints"]]
    assert scanned == ["model_v9.pt", "model_v10.pt", "model_v100.pt"]
    monkeypatch.setenv("CKPTLAB_DB", str(db))
    assert main(["ls", "--json"]) == 0
    listed = [Path(c["path"]).name for c in json.loads(capsys.readouterr().out)["checkpoints"]]
    assert listed == scanned
    with Store(db) as store:
        assert [Path(e.path).name for e in store.entries(with_meta=False)] == scanned


def test_tensor_lists_are_shared_and_dropped_when_unused(tree: Path, tmp_path: Path) -> None:
    def n_lists(store: Store) -> int:
        return store.db.execute("SELECT COUNT(*) FROM tensor_lists").fetchone()[0]

    with Store(tmp_path / "index.sqlite") as store:
        scan([tree], store)
        shared = n_lists(store)
        n_rows = store.db.execute("SELECT COUNT(*) FROM tensors").fetchone()[0]
        assert shared < 9 < n_rows  # 9 readable checkpoints, fewer distinct lists
        odd = tree / "plain" / "checkpoint_epoch_2.pth"
        torch.save({"epoch": 2, "model_state_dict": {"odd.weight": torch.ones(3, 5)}}, odd)
        os.utime(odd, (OLD + 60, OLD + 60))
        scan([tree], store)
        assert n_lists(store) == shared + 1
        assert [(t.name, t.shape) for t in store.tensors(str(odd))] == [("odd.weight", (3, 5))]
        odd.unlink()
        scan([tree], store)
        assert n_lists(store) == shared  # its list went with its last checkpoint
        store.forget_root(str(tree.resolve()))
        assert n_lists(store) == 0


def test_migration_moves_tensor_rows_into_shared_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ckptlab.index.migrations as migrations_module

    db = tmp_path / "old.sqlite"
    rows = [
        (1, "a", 0, "[2, 3]", "float32", 6, 24),
        (1, "b", 2, "[]", "int64", 1, 8),  # position 1 was a duplicate name, ignored when written
        (2, "a", 0, "[2, 3]", "float32", 6, 24),
        (2, "b", 2, "[]", "int64", 1, 8),
        (3, "a", 0, "[4]", "bfloat16", 4, 8),
    ]
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:1])  # an index written before 0002
    with Store(db) as old:
        old.db.execute("INSERT INTO roots (id, path) VALUES (1, '/r')")
        old.db.execute("INSERT INTO runs (id, path, root_id, name) VALUES (1, '/r', 1, 'r')")
        old.db.executemany(
            "INSERT INTO checkpoints (id, path, run_id, layout, status, fingerprint, indexed_at) "
            "VALUES (?, ?, 1, 'file', 'ok', 'f', 0)",
            [(cid, f"/r/{cid}.pt") for cid in (1, 2, 3, 4)],
        )
        old.db.executemany("INSERT INTO tensors VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    monkeypatch.undo()
    with Store(db) as store:
        assert store.applied_migrations() == [
            "0001_initial",
            "0002_shared_tensor_lists",
            "0003_link_to",
            "0004_read_again_2026_11",
            "0005_read_torch_shards_again",
        ]
        assert sorted(tuple(r) for r in store.db.execute("SELECT * FROM tensors")) == rows
        assert store.db.execute("SELECT COUNT(*) FROM tensor_lists").fetchone()[0] == 2
        assert [(t.name, t.shape) for t in store.tensors("/r/1.pt")] == [("a", (2, 3)), ("b", ())]
        assert store.tensors("/r/4.pt") == []
        assert store.checkpoints_with_tensor("a") == ["/r/1.pt", "/r/2.pt", "/r/3.pt"]


def test_progress_counts_every_read(tree: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    with Store(tmp_path / "index.sqlite") as store:
        scan([tree], store, workers=3, progress=lambda *a: calls.append(a))
        assert calls == [("read", n, 10) for n in range(11)]  # from nothing read to all 10, one at a time
        calls.clear()
        scan([tree], store, progress=lambda *a: calls.append(a))
        assert calls == [("read", 0, 0)]  # nothing changed: nothing to read


def test_read_concurrency_follows_waiting() -> None:
    """One reader thread while reads are CPU-bound (more only fight over the GIL); more, up to the cap,
    while they mostly wait on storage; back to one when they stop waiting."""
    from ckptlab.index.reading import _Concurrency

    flow = _Concurrency(8)
    for _ in range(5):
        flow.update(0.05)  # CPU-bound chunks: a local disk
    assert flow.now == 1
    for _ in range(6):
        flow.update(0.95)  # chunks spent waiting: a network mount
    assert flow.now == 8
    for _ in range(10):
        flow.update(0.0)
    assert flow.now == 1


def test_an_output_dir_with_the_final_save_still_lists_its_checkpoints(tmp_path: Path) -> None:
    # trainer.save_model() + save_state() write the final model and state into output_dir, next to the
    # checkpoint-N folders: those stay checkpoints of their own, and the final save is of the same run
    out = tmp_path / "out"
    for step in (10, 20):
        write_hf_checkpoint(out / f"checkpoint-{step}", step=step)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous().clone() for k, v in small_state_dict().items()}, str(out / "model.safetensors")
    )
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 20, "epoch": 2.0, "log_history": []}))
    torch.save({"output_dir": str(out)}, out / "training_args.bin")
    (out / "runs").mkdir()  # TensorBoard's folder: walked, nothing in it
    (out / "tmp-checkpoint-30").mkdir()  # a save under way: debris, as anywhere
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        result = scan([tmp_path], store)
    got = {str(Path(e.path).relative_to(tmp_path)): (e.layout, e.run, e.status) for e in result.entries}
    assert got == {
        "out": ("hf-checkpoint", str(out), "ok"),
        "out/checkpoint-10": ("hf-checkpoint", str(out), "ok"),
        "out/checkpoint-20": ("hf-checkpoint", str(out), "ok"),
        "out/tmp-checkpoint-30": ("file", str(out), "debris"),
    }
    assert {Path(p).name for p, _, _ in {e.path: e for e in result.entries}[str(out)].files} == {
        "model.safetensors", "trainer_state.json", "training_args.bin"
    }  # fmt: skip


def test_a_scan_reads_no_part_through_a_link_out_of_its_root(tmp_path: Path) -> None:
    # discovery follows no link out of the root; the readers of multi-file checkpoints must not either
    outside = tmp_path / "outside"
    (outside / "global_step9").mkdir(parents=True)
    evil = ReduceTo(os.system, "echo pwned")
    torch.save({"evil": evil}, outside / "optimizer.pt")
    torch.save({"module": {}, "evil": evil}, outside / "global_step9" / "mp_rank_00_model_states.pt")
    root = tmp_path / "root"
    ck5, ck9 = write_hf_checkpoint(root / "checkpoint-5", step=5), write_hf_checkpoint(root / "checkpoint-9")
    (ck5 / "optimizer.pt").unlink()
    os.symlink(outside / "optimizer.pt", ck5 / "optimizer.pt")
    os.symlink(outside / "global_step9", ck9 / "global_step9")
    os.mkfifo(root / "checkpoint-5" / "scaler.pt")  # a FIFO under a part's name must not hang the read
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        rows = {Path(e.path).name: e for e in scan([root], store).entries}
    five = rows["checkpoint-5"]
    assert five.status == "ok" and five.safe is False and five.unsafe_globals == ()  # unverified, not read
    meta5 = five.meta or {}
    assert "optimizer.pt: a link out of the scanned folder, not read" in meta5["warnings"]
    assert "optimizer.pt" in meta5["safety"]["unverified"]
    nine = rows["checkpoint-9"]  # DeepSpeed would load the linked tag folder on resume: not verified
    assert nine.status == "ok" and nine.safe is False and nine.unsafe_globals == ()
    assert not any("global_step9" in p for p, _, _ in nine.files)
    assert (nine.meta or {})["safety"]["unverified"] == ["global_step9/mp_rank_00_model_states.pt"]
    # inspect, given the folder itself, reads what its links lead to (as it reads a linked file)
    assert read_meta(ck5).safety.unsafe_globals == ("posix.system",)
