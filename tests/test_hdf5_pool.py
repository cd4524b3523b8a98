"""The pooled h5py workers: reuse across batches, replacement after a crash or a corrupt file, two workers
sharing a batch, idle exit, and results identical whichever way a batch is read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5_fixtures import (
    CORRUPT_HDF5,
    use_flaky_worker,
    worker_argv_ending_with,
    write_dot_keras,
    write_generic,
    write_keras2_model,
    write_keras3_weights,
)

from ckptlab.errors import FormatError
from ckptlab.formats import hdf5_reader as hr
from ckptlab.formats.hdf5_client import batch, pool, runner
from ckptlab.formats.hdf5_client.child import Child
from ckptlab.formats.limits import DEFAULT_LIMITS, Limits
from ckptlab.model import CheckpointMeta, Hdf5Location


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    pool.shutdown()
    yield
    pool.shutdown()


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """40 files of four layouts (a `.keras` among them), enough for a batch to be shared by two workers."""
    d = tmp_path_factory.mktemp("many")
    write_keras2_model(d / "k2.h5")
    write_keras3_weights(d / "k3.weights.h5")
    write_generic(d / "g.h5")
    write_dot_keras(d / "m.keras")
    sources = [d / "k2.h5", d / "k3.weights.h5", d / "g.h5", d / "m.keras"]
    out = []
    for i in range(40):
        src = sources[i % len(sources)]
        dst = d / f"{i:02d}-{src.name}"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def _doc(result: CheckpointMeta | FormatError) -> object:
    if isinstance(result, FormatError):
        return str(result)
    doc = result.to_json()
    doc["locs"] = [repr(t.loc) for t in result.tensors + result.other_tensors]
    return json.loads(json.dumps(doc))


def _idle_pids() -> list[int]:
    return [c.proc.pid for c in pool.POOL.idle]


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once process `pid` no longer runs (a zombie counts as gone)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_one_worker_serves_batches_single_reads_and_dataset_reads(many: list[Path]) -> None:
    first = hr.read_hdf5_many(many[:3], DEFAULT_LIMITS)
    assert all(isinstance(r, CheckpointMeta) for r in first)
    [pid] = _idle_pids()
    assert all(isinstance(r, CheckpointMeta) for r in hr.read_hdf5_many(many[3:8], DEFAULT_LIMITS))
    meta = hr.read_hdf5(many[2], DEFAULT_LIMITS)
    data, dtype, shape = hr.read_hdf5_dataset(meta.tensor("decoder/big").loc, DEFAULT_LIMITS)
    assert (dtype, shape, len(data)) == ("float32", (50, 20), 4000)
    assert _idle_pids() == [pid]  # no new process for any of them


def test_bad_files_keep_the_worker(tmp_path: Path, many: list[Path]) -> None:
    """libhdf5 rejects a corrupt superblock, a file that is not HDF5 or an object cap cleanly: the worker
    goes on with the next file (a directory of broken files must not cost one process each)."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(CORRUPT_HDF5)
    text = tmp_path / "text.h5"
    text.write_bytes(b"not hdf5 at all" * 20)
    hr.read_hdf5_many(many[:1], DEFAULT_LIMITS)
    [pid] = _idle_pids()
    results = hr.read_hdf5_many([bad, text, many[2]], Limits(max_hdf5_objects=5))
    assert [str(r) for r in results] == [
        f"{bad}: cannot open HDF5 file (bad superblock version number)",
        f"{text}: not an HDF5 file (no HDF5 signature)",
        f"{many[2]}: more than 5 HDF5 objects",
    ]
    assert isinstance(hr.read_hdf5(many[0], DEFAULT_LIMITS), CheckpointMeta)
    assert _idle_pids() == [pid]


def test_unforeseen_error_retires_the_worker_and_the_batch_goes_on(
    tmp_path: Path, many: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_flaky_worker(monkeypatch)  # segfaults on boom*, raises on oops*
    hr.read_hdf5_many(many[:1], DEFAULT_LIMITS)
    [before] = _idle_pids()
    oops = tmp_path / "oops.h5"
    shutil.copyfile(many[2], oops)
    results = hr.read_hdf5_many([many[0], oops, many[2]], DEFAULT_LIMITS)
    assert str(results[1]) == f"{oops}: cannot read HDF5 (RuntimeError: unforeseen)"
    assert isinstance(results[0], CheckpointMeta) and results[2].n_tensors == 8
    [after] = _idle_pids()
    assert after != before and _gone(before)  # it said bye after that file and exited


def test_worker_is_replaced_after_many_files(many: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "_MAX_ITEMS_PER_WORKER", 5)
    hr.read_hdf5_many(many[:3], DEFAULT_LIMITS)
    [pid] = _idle_pids()
    assert all(isinstance(r, CheckpointMeta) for r in hr.read_hdf5_many(many[3:6], DEFAULT_LIMITS))
    assert _idle_pids() == [] and _gone(pid)  # 6 files: not pooled again
    assert isinstance(hr.read_hdf5(many[0], DEFAULT_LIMITS), CheckpointMeta)


def test_a_worker_killed_while_idle_is_replaced(many: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    hr.read_hdf5_many(many[:1], DEFAULT_LIMITS)
    [pid] = _idle_pids()
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    # as if it died just after the pool checked it: its first answer never comes, and that says nothing
    # about the file, which is read again by a fresh worker
    monkeypatch.setattr(Child, "alive", lambda self: self.proc.poll() is None or self.served > 0)
    takes: list[bool] = []
    take = pool.POOL.take

    def spy(memory_bytes: int, fresh: bool = False) -> Child:
        takes.append(fresh)
        return take(memory_bytes, fresh)

    monkeypatch.setattr(pool.POOL, "take", spy)
    results = hr.read_hdf5_many(many[:2], DEFAULT_LIMITS)
    assert all(isinstance(r, CheckpointMeta) for r in results)
    assert takes == [False, True]  # the dead worker first, then one retry in a fresh one
    assert pid not in _idle_pids()


def test_idle_worker_exits_by_itself(many: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_IDLE_EXIT_S", 0.3)
    monkeypatch.setattr(pool, "_REUSE_S", 0.1)
    hr.read_hdf5_many(many[:1], DEFAULT_LIMITS)
    [pid] = _idle_pids()
    assert _gone(pid)
    assert isinstance(hr.read_hdf5(many[1], DEFAULT_LIMITS), CheckpointMeta)  # a new one takes over
    assert pid not in _idle_pids()


def test_worker_used_only_for_a_dataset_read_exits_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "_IDLE_EXIT_S", 0.3)
    path = _chunked(tmp_path)
    data, _, _ = hr.read_hdf5_dataset(Hdf5Location(str(path), "/w"), DEFAULT_LIMITS)
    assert data == np.arange(12, dtype="<f4").tobytes()
    [pid] = _idle_pids()  # its only request was the dataset read
    assert _gone(pid)


def test_workers_are_not_shared_across_memory_limits(many: list[Path]) -> None:
    hr.read_hdf5_many(many[:1], DEFAULT_LIMITS)
    [pid] = _idle_pids()
    hr.read_hdf5_many(many[:1], Limits(hdf5_memory_bytes=1024 * 2**20))
    assert len(_idle_pids()) == 2 and pid in _idle_pids()  # its address-space cap was set at its start


def test_two_workers_give_the_same_results_in_order(tmp_path: Path, many: list[Path]) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(CORRUPT_HDF5)
    paths = [*many[:20], bad, tmp_path / "missing.h5", *many[20:]]
    one = [_doc(r) for r in hr.read_hdf5_many(paths, DEFAULT_LIMITS, workers=1)]
    two = [_doc(r) for r in hr.read_hdf5_many(paths, DEFAULT_LIMITS, workers=2)]
    assert two == one
    assert one[20] == f"{bad}: cannot open HDF5 file (bad superblock version number)"
    assert one[21] == f"{tmp_path / 'missing.h5'}: cannot read: No such file or directory"
    assert len(_idle_pids()) == 2
    # with two warm workers, the default shares a batch of this size when a core is idle
    assert [_doc(r) for r in hr.read_hdf5_many(paths, DEFAULT_LIMITS)] == one


@pytest.mark.parametrize(
    ("n_items", "warm", "load", "workers", "expected"),
    [
        (20, 2, 0.0, None, 1),  # too small to share
        (100, 1, 0.0, None, 1),  # starting a second worker would not pay
        (100, 2, 0.0, None, 2),  # two warm workers: share
        (600, 0, 0.0, None, 2),  # big enough to start one
        (600, 2, 1.0, None, 1),  # no idle core: one worker is as fast and cheaper
        (600, 0, 1.0, 2, 2),  # the caller decides
        (600, 0, 0.0, 1, 1),
        (600, 0, 0.0, 5, 2),  # at most two
        (1, 0, 0.0, 2, 1),
    ],
)
def test_how_many_workers_share_a_batch(
    monkeypatch: pytest.MonkeyPatch, n_items: int, warm: int, load: float, workers: int | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(pool.POOL, "count_idle", lambda memory_bytes: warm)
    assert batch._want_workers(n_items, DEFAULT_LIMITS, workers) == expected


def test_crash_in_a_shared_batch_fails_only_that_file(
    tmp_path: Path, many: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_flaky_worker(monkeypatch)  # segfaults on boom*, raises on oops*
    boom = tmp_path / "boom.h5"
    shutil.copyfile(many[2], boom)
    paths = [*many[:25], boom, *many[25:]]
    results = hr.read_hdf5_many(paths, DEFAULT_LIMITS, workers=2)
    assert str(results[25]) == f"{boom}: HDF5 parser crashed (signal 11)"
    assert all(isinstance(r, CheckpointMeta) for i, r in enumerate(results) if i != 25)


def test_worker_that_cannot_start_fails_each_file_in_a_shared_batch(
    many: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "worker_argv", lambda: [sys.executable, "-c", "raise SystemExit(4)"])
    results = hr.read_hdf5_many(many[:6], DEFAULT_LIMITS, workers=2)
    assert [str(r) for r in results] == [f"{p}: HDF5 parser failed (exit 4: no output)" for p in many[:6]]


def _chunked(tmp_path: Path) -> Path:
    """A (3, 4) float32 dataset `w`, gzip-compressed in row chunks: read through the worker's data path."""
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        values = np.arange(12, dtype="<f4").reshape(3, 4)
        f.create_dataset("w", data=values, chunks=(1, 4), compression="gzip")
    return path


def test_chunked_dataset_reads_reuse_the_worker(tmp_path: Path) -> None:
    path = _chunked(tmp_path)
    for _ in range(2):  # the second read reuses the worker of the first
        data, dtype, shape = hr.read_hdf5_dataset(Hdf5Location(str(path), "/w"), DEFAULT_LIMITS)
        assert (data, dtype, shape) == (np.arange(12, dtype="<f4").tobytes(), "float32", (3, 4))
    assert len(_idle_pids()) == 1


def test_worker_imports_nothing_from_ckptlab() -> None:
    """The worker parses untrusted HDF5 in isolation: loaded the way the pool starts it, with every one of
    its modules imported, it has not imported the ckptlab package (nor torch)."""
    import subprocess

    from ckptlab.formats.hdf5_client import launch

    modules = sorted(p.stem for p in launch.WORKER_PACKAGE.glob("*.py") if p.stem != "__init__")
    assert {"serve", "walk", "dataset"} <= set(modules)
    argv = worker_argv_ending_with(
        "".join(f"import hdf5_worker.{m}\n" for m in modules if m != "__main__")
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ckptlab', 'torch')))\n",
    )
    out = subprocess.run(
        argv,
        env=launch.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=launch.WORKER_PACKAGE.parent,  # even run from inside the package tree
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
