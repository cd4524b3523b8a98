"""A file that is only a part of a checkpoint directory (a DCP shard or `.metadata`, the JSON files of an HF
folder) is refused with one line naming the directory to inspect; the directory itself, its weight index
and the torch.save files beside them read as before, and a scan does not change."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_sharded_safetensors

from ckptlab.cli import main
from ckptlab.errors import FormatError
from ckptlab.formats import read_meta
from ckptlab.index.scan import scan
from ckptlab.index.store import Store

pytest.importorskip("torch")


def _refused(path: Path) -> str:
    with pytest.raises(FormatError) as info:
        read_meta(path)
    assert info.value.path == str(path)
    return info.value.cause


def test_dcp_shard_and_metadata_point_at_the_directory(dcp_dir: Path) -> None:
    assert _refused(dcp_dir / "__0_0.distcp") == (
        f"a shard of the torch.distributed.checkpoint directory {dcp_dir}: inspect the directory"
    )
    assert _refused(dcp_dir / ".metadata") == (
        f"the index of the torch.distributed.checkpoint directory {dcp_dir}: inspect the directory"
    )
    assert read_meta(dcp_dir).format == "torch-dcp"


def test_cli_prints_one_line_and_exits_1(dcp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(dcp_dir / "__0_0.distcp")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: {dcp_dir / '__0_0.distcp'}: a shard of the torch.distributed.checkpoint directory "
        f"{dcp_dir}: inspect the directory\n"
    )


def test_relative_path_names_the_current_directory(
    dcp_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(dcp_dir)
    assert main(["inspect", ".metadata"]) == 1
    assert capsys.readouterr().err == (
        "error: .metadata: the index of the torch.distributed.checkpoint directory .: inspect the directory\n"
    )


def test_distcp_without_metadata_is_read_as_before(dcp_dir: Path, tmp_path: Path) -> None:
    """No `.metadata` beside it: not a DCP directory (a scan may list such a file on its own)."""
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(dcp_dir / "__0_0.distcp", lone / "__0_0.distcp")
    assert read_meta(lone / "__0_0.distcp").format == "torch-zip"


def test_hf_checkpoint_json_points_at_the_folder(hf_dir: Path) -> None:
    for name in ("trainer_state.json", "config.json"):
        assert _refused(hf_dir / name) == (
            f"a part of the Hugging Face checkpoint directory {hf_dir}: inspect the directory"
        )
    assert read_meta(hf_dir).layout == "hf-checkpoint"


@pytest.mark.parametrize(("name", "fmt"), [("optimizer.pt", "torch-zip"), ("rng_state.pth", "torch-zip")])
def test_torch_files_in_an_hf_checkpoint_are_still_read_alone(hf_dir: Path, name: str, fmt: str) -> None:
    m = read_meta(hf_dir / name)
    assert (m.format, m.layout, m.path) == (fmt, "file", str(hf_dir / name))


def test_save_pretrained_json_points_at_the_folder(tmp_path: Path) -> None:
    d = tmp_path / "export"
    d.mkdir()
    index = write_sharded_safetensors(d)
    (d / "config.json").write_text(json.dumps({"model_type": "mlp"}))
    assert _refused(d / "config.json") == (
        f"a part of the Hugging Face model directory {d}: inspect the directory"
    )
    m = read_meta(index)  # the weight index is a checkpoint of its own (a scan reads it so)
    assert (m.format, m.metadata["shards"]) == ("safetensors-sharded", 2)


def test_only_the_json_an_hf_folder_holds_is_refused(tmp_path: Path) -> None:
    """An index under another name (another case, a backup copy) beside the weights is a checkpoint of its
    own; any other JSON there reports why it is no index; the folder's own JSON files point at it."""
    d = tmp_path / "export"
    d.mkdir()
    index = write_sharded_safetensors(d)
    (d / "config.json").write_text(json.dumps({"model_type": "mlp"}))
    for name in ("weights.index.JSON", "index_backup.json"):
        shutil.copy(index, d / name)
        m = read_meta(d / name)
        assert (m.format, m.metadata["shards"], m.path) == ("safetensors-sharded", 2, str(d / name))
    (d / "notes.json").write_text("{}")
    assert _refused(d / "notes.json") == "JSON file without a weight_map: not a sharded checkpoint index"
    for name in ("generation_config.json", "tokenizer_config.json", "Special_Tokens_Map.JSON"):
        (d / name).write_text("{}")
        assert _refused(d / name) == f"a part of the Hugging Face model directory {d}: inspect the directory"


def test_json_elsewhere_keeps_its_message(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert _refused(tmp_path / "config.json") == (
        "JSON file without a weight_map: not a sharded checkpoint index"
    )


def test_scan_reads_the_directories(hf_dir: Path, dcp_dir: Path, tmp_path: Path) -> None:
    root = tmp_path
    with Store(tmp_path / "index.sqlite") as store:
        result = scan([root], store, settle_seconds=0)
    got = {os.path.relpath(e.path, root): (e.layout, e.status) for e in result.entries}
    assert got == {
        "out/checkpoint-500": ("hf-checkpoint", "ok"),
        "dcp/step_300": ("dcp", "ok"),
    }
    assert result.errors == []
