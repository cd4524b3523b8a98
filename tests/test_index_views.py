"""Unit tests of ckptlab.index.views: labels, table rows, filters and summary numbers of in-memory entries."""

from __future__ import annotations

import pytest

from ckptlab.index import views
from ckptlab.index.scan import ScanResult
from ckptlab.model import IndexEntry


def entry(path: str, run: str, root: str = "/r", status: str = "ok", **kw: object) -> IndexEntry:
    return IndexEntry(
        path=path, run=run, root=root, layout=kw.pop("layout", "file"), status=status, fingerprint="", **kw
    )  # type: ignore[arg-type]


ENTRIES = [
    entry(
        "/r/exp/checkpoints/epoch=1-step=64.ckpt",
        "/r/exp",
        format="torch-zip",
        step=64,
        epoch=1,
        size_bytes=3 * 1024**2,
        n_params=1_000_000,
        metrics={"val_loss": 0.51234, "best_model_score": 0.5, "val_acc": 0.875},
        safe=True,
    ),
    entry(
        "/r/exp/checkpoints/last.ckpt",
        "/r/exp",
        format="torch-zip",
        step=64,
        size_bytes=3 * 1024**2,
        n_params=1_000_000,
        safe=False,
        unsafe_globals=("posix.system", "builtins.eval"),
    ),
    entry("/r/exp/model.pt.tmp", "/r/exp", status="debris", reason="temporary file (*.tmp)", size_bytes=512),
    entry("/r/hf/checkpoint-500", "/r/hf", layout="hf-checkpoint", format="safetensors", step=500, safe=True),
    entry("/r/broken.pt", "/r", status="unreadable", reason="not a PyTorch checkpoint", size_bytes=34),
    entry(
        "/r/shards/model.safetensors.index.json",
        "/r/shards",
        layout="sharded",
        status="incomplete",
        reason="missing shard(s): b",
        size_bytes=1000,
    ),
]
LABELS = views.run_labels(ENTRIES)


def test_run_labels_are_relative_to_the_root() -> None:
    assert LABELS == {"/r/exp": "exp", "/r/hf": "hf", "/r": "r", "/r/shards": "shards"}
    nested = [entry("/r/a/exports/m.pt", "/r/a/exports")]
    assert views.run_labels(nested) == {"/r/a/exports": "a/exports"}


def test_run_labels_that_collide_across_roots_get_the_root_name() -> None:
    two = [
        entry("/data/one/exp/a.pt", "/data/one/exp", root="/data/one"),
        entry("/data/two/exp/a.pt", "/data/two/exp", root="/data/two"),
        entry("/data/two/b.pt", "/data/two", root="/data/two"),
    ]
    assert views.run_labels(two) == {
        "/data/one/exp": "one/exp",
        "/data/two/exp": "two/exp",
        "/data/two": "two",
    }


def test_hub_cache_runs_are_labelled_with_their_repo_id() -> None:
    hub = "/home/u/.cache/huggingface/hub"
    rows = [
        entry(
            f"{hub}/models--org--tiny/snapshots/r1/model.safetensors", f"{hub}/models--org--tiny", root=hub
        ),
        entry(f"{hub}/datasets--org--set/snapshots/r1/x.pt", f"{hub}/datasets--org--set", root=hub),
        entry(
            "/other/models--org--tiny/snapshots/r1/model.safetensors",
            "/other/models--org--tiny",
            root="/other",
        ),
    ]
    assert views.run_labels(rows) == {
        f"{hub}/models--org--tiny": "hub/models--org--tiny",  # the same repo cached twice: told apart
        f"{hub}/datasets--org--set": "datasets/org/set",
        "/other/models--org--tiny": "other/models--org--tiny",
    }
    assert views.run_labels(rows[:2])[f"{hub}/models--org--tiny"] == "org/tiny"
    assert [views.checkpoint_label(e) for e in rows[:1]] == ["snapshots/r1/model.safetensors"]


def test_run_labels_of_runs_scanned_as_roots_take_the_shortest_distinct_end() -> None:
    """Two Lightning `version_0` folders scanned as roots themselves: the folders above tell them apart
    (it was the whole absolute path), as few as needed, never a label another run has already."""
    rows = [
        entry(
            "/home/u/exp/csv/version_0/a.ckpt", "/home/u/exp/csv/version_0", root="/home/u/exp/csv/version_0"
        ),
        entry("/home/u/exp/tb/version_0/a.ckpt", "/home/u/exp/tb/version_0", root="/home/u/exp/tb/version_0"),
    ]
    assert views.run_labels(rows) == {
        "/home/u/exp/csv/version_0": "csv/version_0",
        "/home/u/exp/tb/version_0": "tb/version_0",
    }
    same_tail = [
        entry("/a/x/run/m.pt", "/a/x/run", root="/a/x/run"),
        entry("/b/x/run/m.pt", "/b/x/run", root="/b/x/run"),
        entry("/c/x/run/m.pt", "/c/x/run", root="/c"),  # labelled `x/run`: taken
    ]
    assert views.run_labels(same_tail) == {"/a/x/run": "a/x/run", "/b/x/run": "b/x/run", "/c/x/run": "x/run"}
    same_path_end = [
        entry("/x/run/m.pt", "/x/run", root="/x/run"),
        entry("/y/x/run/m.pt", "/y/x/run", root="/y/x/run"),
    ]
    assert views.run_labels(same_path_end) == {"/x/run": "/x/run", "/y/x/run": "y/x/run"}


def test_runs_named_by_label_name_or_path_end() -> None:
    labels = {
        "/o/lightning/csv/version_0": "lightning/csv/version_0",
        "/o/lightning/tb/version_0": "lightning/tb/version_0",
        "/o/hub/models--org--tiny": "org/tiny",
        "/o/version_0x": "version_0x",
    }
    csv, tb, hub = list(labels)[:3]
    for name, expected in (
        ("version_0", [csv, tb]),  # a name two runs share: both, in the labels' order
        ("version_0/", [csv, tb]),
        ("csv/version_0", [csv]),
        ("lightning/tb/version_0", [tb]),
        ("org/tiny", [hub]),
        ("models--org--tiny", [hub]),
        ("hub/models--org--tiny", [hub]),
        ("sv/version_0", []),  # whole folders only
        ("ersion_0", []),
        ("", []),
        ("/", []),
    ):
        assert views.runs_named(name, labels) == expected, name


def test_closest_runs() -> None:
    labels = {f"/o/{n}": n for n in ("lightning/csv/version_0", "lightning/tb/version_1", "hf", "keras")}
    assert views.closest_runs("version_0", labels) == ["lightning/csv/version_0", "lightning/tb/version_1"]
    assert views.closest_runs("/elsewhere/kears/", labels) == ["keras"]  # a path: by its last folder
    assert views.closest_runs("zzz", labels) == []
    assert len(views.closest_runs("version", labels, n=1)) == 1


def test_checkpoint_label_and_safety() -> None:
    assert [views.checkpoint_label(e) for e in ENTRIES] == [
        "checkpoints/epoch=1-step=64.ckpt",
        "checkpoints/last.ckpt",
        "model.pt.tmp",
        "checkpoint-500",
        "broken.pt",
        "model.safetensors.index.json",
    ]
    assert [views.safety_class(e) for e in ENTRIES] == [
        "safe",
        "unsafe",
        "unchecked",
        "safe",
        "unchecked",
        "unchecked",
    ]
    assert [views.safety_text(e) for e in ENTRIES[:3]] == ["safe", "⚠ unsafe: posix.system +1", None]
    assert views.safety_text(entry("/r/x.pt", "/r", safe=False)) == "⚠ unsafe"
    # an HF output_dir's final save_model() is a checkpoint whose path is its run's: named as such
    final = entry("/r/hf-run", "/r/hf-run", layout="hf-checkpoint")
    assert views.checkpoint_label(final) == "hf-run/ (final save)"


def test_a_link_names_its_target_relative_to_its_folder() -> None:
    """As `ls -l` shows a relative link: the target of a link into another folder is not an absolute path."""
    cases = [  # (link, its run, target, label)
        ("/r/run/last.ckpt", "/r/run", "/r/run/epoch=2.ckpt", "last.ckpt → epoch=2.ckpt"),
        ("/r/sh/model.safetensors", "/r/sh", "/r/hf/checkpoint-4", "model.safetensors → ../hf/checkpoint-4"),
        ("/r/run2/c/imported.ckpt", "/r/run2", "/r/run1/c/e.ckpt", "c/imported.ckpt → ../../run1/c/e.ckpt"),
    ]
    for path, run, target, label in cases:
        assert views.checkpoint_label(entry(path, run, link_to=target)) == label


@pytest.mark.parametrize(
    ("metrics", "text"),
    [
        ({"val_loss": 0.51234, "best_model_score": 0.5, "val_acc": 0.875}, "val_loss=0.5123, val_acc=0.875"),
        (
            {"eval_accuracy": 0.6, "eval_loss": 1.2, "loss": 0.7, "grad_norm": 1.5, "f1": 0.4},
            "eval_loss=1.2, loss=0.7, eval_accuracy=0.6",
        ),
        ({"learning_rate": 1e-4, "epoch": 3.0}, "epoch=3, learning_rate=0.0001"),
        ({"loss": float("nan")}, "loss=nan"),
        ({}, ""),
    ],
)
def test_metrics_text(metrics: dict[str, float], text: str) -> None:
    assert views.metrics_text(metrics) == text


def test_size_unit() -> None:
    assert views.size_unit([]) == ("B", 1)
    assert views.size_unit([0, 1023]) == ("B", 1)
    assert views.size_unit([1024]) == ("KiB", 1024)
    assert views.size_unit([34, 3 * 1024**2]) == ("MiB", 1024**2)
    assert views.size_unit([140 * 1024**3]) == ("GiB", 1024**3)
    assert views.size_unit([5 * 1024**5]) == ("TiB", 1024**4)


def test_summary() -> None:
    s = views.summarize(ENTRIES)
    assert (s.n_checkpoints, s.n_runs, s.n_unsafe, s.n_unreadable, s.n_incomplete, s.n_debris) == (
        6,
        4,
        1,
        1,
        1,
        1,
    )
    assert s.total_bytes == 6 * 1024**2 + 512 + 34 + 1000
    assert s.total_str == "6.0 MiB"
    assert dict(s.by_status) == {"ok": 3, "unreadable": 1, "incomplete": 1, "debris": 1}
    empty = views.summarize([])
    assert (empty.n_checkpoints, empty.n_runs, empty.total_str) == (0, 0, "0 B")


def test_table_rows() -> None:
    rows = views.table_rows(ENTRIES, LABELS)
    assert all(list(r) == list(views.TABLE_COLUMNS) for r in rows)
    assert rows[0] == {
        "run": "exp",
        "checkpoint": "checkpoints/epoch=1-step=64.ckpt",
        "step": 64,
        "epoch": 1,
        "format": "torch-zip",
        "size": 3.0,  # MiB: the largest checkpoint is 3 MiB
        "params": 1_000_000,
        "status": "ok",
        "safety": "safe",
        "metrics": "val_loss=0.5123, val_acc=0.875",
        "layout": "file",
        "reason": "",
        "path": "/r/exp/checkpoints/epoch=1-step=64.ckpt",
    }
    assert rows[2]["size"] == pytest.approx(512 / 1024**2)
    assert (rows[4]["status"], rows[4]["reason"], rows[4]["format"], rows[4]["safety"]) == (
        "unreadable",
        "not a PyTorch checkpoint",
        None,
        None,
    )
    assert views.table_rows(ENTRIES[:1], LABELS, unit=("KiB", 1024))[0]["size"] == 3072.0
    assert views.table_rows([], LABELS) == []


def test_filters() -> None:
    assert views.filter_options(ENTRIES, LABELS) == {
        "run": ["exp", "hf", "r", "shards"],
        "format": ["(none)", "safetensors", "torch-zip"],
        "status": ["ok", "unreadable", "incomplete", "debris"],
        "safety": ["safe", "unsafe", "unchecked"],
    }

    def paths(**kw: object) -> list[str]:
        return [views.checkpoint_label(e) for e in views.filter_entries(ENTRIES, LABELS, **kw)]  # type: ignore[arg-type]

    assert len(paths()) == len(ENTRIES)  # no filter keeps everything
    assert paths(runs=["exp"]) == [
        "checkpoints/epoch=1-step=64.ckpt",
        "checkpoints/last.ckpt",
        "model.pt.tmp",
    ]
    assert paths(runs=["exp"], statuses=["ok"]) == [
        "checkpoints/epoch=1-step=64.ckpt",
        "checkpoints/last.ckpt",
    ]
    assert paths(runs=["exp"], statuses=["ok"], safety=["unsafe"]) == ["checkpoints/last.ckpt"]
    assert paths(formats=["(none)"]) == ["model.pt.tmp", "broken.pt", "model.safetensors.index.json"]
    assert paths(formats=["safetensors", "torch-zip"], safety=["safe"]) == [
        "checkpoints/epoch=1-step=64.ckpt",
        "checkpoint-500",
    ]
    assert paths(statuses=["incomplete", "debris"]) == ["model.pt.tmp", "model.safetensors.index.json"]
    assert paths(runs=["nope"]) == []


def test_usage_rows() -> None:
    assert views.usage_rows(ENTRIES[2:5], LABELS) == [
        ("exp", "debris", 512),
        ("hf", "ok", 0),
        ("r", "unreadable", 34),
    ]


def test_picker_options() -> None:
    assert list(views.picker_options(ENTRIES).values()) == [
        "exp / checkpoints/epoch=1-step=64.ckpt · step 64",
        "exp / checkpoints/last.ckpt · step 64 · unsafe",
        "exp / model.pt.tmp · debris",
        "hf / checkpoint-500 · step 500",
        "r / broken.pt · unreadable",
        "shards / model.safetensors.index.json · incomplete",
    ]
    assert views.picker_options([entry("/r/k/w.02.h5", "/r/k", epoch=2)]) == {
        "/r/k/w.02.h5": "k / w.02.h5 · epoch 2"
    }
    assert list(views.picker_options(ENTRIES)) == [e.path for e in ENTRIES]
    # the snapshot's labels, when given, are used as they are
    assert views.picker_options(ENTRIES, views.run_labels(ENTRIES)) == views.picker_options(ENTRIES)
    given = views.picker_options(ENTRIES, {e.run: "X" for e in ENTRIES})
    assert all(label.startswith("X / ") for label in given.values())


def test_scan_report_and_lines() -> None:
    a = ScanResult(
        roots=["/r"], entries=ENTRIES[:2], errors=[("/r/x", "bad")], parsed=1, reused=1, seconds=0.25
    )
    missing = ScanResult(roots=["/gone"], errors=[("/gone", "no such file or directory")], seconds=0.001)
    report = views.scan_report([a, missing], notes=["demo unavailable"])
    assert report.line == "2 checkpoints (1 read, 1 unchanged), 2 errors in 0.25 s"
    assert report.notes == ("demo unavailable", "/gone: no such file or directory")
    assert report.n_roots == 2
    assert views.scan_report([]).line == "0 checkpoints (0 read, 0 unchanged), 0 errors in 0.00 s"
    assert views.scan_line(1, 1, 0, 1, 1234.5) == "1 checkpoint (1 read, 0 unchanged), 1 error in 1234.50 s"
    assert (
        views.scan_line(12_345, 0, 12_345, 0, 0.03)
        == "12,345 checkpoints (0 read, 12,345 unchanged), 0 errors in 0.03 s"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "just now"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (7200, "2 h ago"),
        (86400, "1 day ago"),
        (10 * 86400, "10 days ago"),
    ],
)
def test_ago(seconds: float, text: str) -> None:
    assert views.ago(seconds) == text
