"""Benchmark: `ckptlab.index.scan` (indexing checkpoint directories into SQLite) against full loads.

Cases, all measured in one run on the same generated files:

1. One run directory of ~2,000 small checkpoint files in a realistic mix (by file count: 40 % `torch.save`
   zip training dicts, 30 % safetensors, 10 % legacy `torch.save`, 10 % Keras-2 `.h5`, 10 % HF Trainer
   `checkpoint-N/` directories of model.safetensors + optimizer.pt + scheduler.pt + trainer_state.json):
   - cold scan (fresh index database) vs a loop of full loads of the same files
     (`torch.load(weights_only=True)`, `safetensors.torch.load_file`, h5py reading every dataset,
     `json.load`) — target ≥ 5×;
   - warm re-scan with nothing changed vs the cold scan — target ≥ 20×;
   - `ckptlab.read_meta` per safetensors file vs the floor `open + read(8) + pread(n) + json.loads` on the
     same ~600 files, in-process loops — target ckptlab/floor ≤ 2.0;
   - peak RSS of a fresh process running the cold scan — target < 300 MB.
2. A directory of a few multi-GB checkpoints (two ~2 GiB safetensors written sparsely, a ~2 GiB `torch.save`
   zip and a ~1 GiB legacy `.pt` of real data): bytes read by the scanning process (`/proc/self/io`) over
   the bytes on disk — target < 1 %.

Method (see `_common.py`): every timed repeat is a fresh subprocess in which the libraries are imported and
warmed up on a tiny directory of one checkpoint per format before the timer starts; the files are read into
the page cache before every repeat, so both sides are measured warm; repeats of the sides of a comparison are
interleaved; medians are reported. Data generation runs in a child process (this process never imports
torch) and is cached in `benchmarks/_data/` (git-ignored).

    python benchmarks/bench_scan.py            # full run (~2,000 files + ~7 GiB directory, a few minutes)
    python benchmarks/bench_scan.py --quick    # smoke run (200 files, no multi-GB case)
    python benchmarks/bench_scan.py --json results.json

Exit status: 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MARK,
    GiB,
    Measurement,
    MiB,
    Row,
    Spec,
    cached_manifest,
    check_disk_space,
    data_dir,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    log,
    machine_info,
    markdown_table,
    measure_interleaved,
    median,
    package_version,
    parse_args,
    report,
    run_marked,
    run_worker,
    write_json,
)

GENERATOR_VERSION = 1
MB = 1000 * 1000
AGE_S = 86400  # generated files get mtimes one day back: far outside the scanner's 5 s settle window

# share of the files per kind; HF checkpoint dirs count their 4 files each
MIX = {"zip": 0.40, "safetensors": 0.30, "legacy": 0.10, "h5": 0.10, "hf": 0.10}
HF_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")

# the multi-GB directory: name -> (kind, bytes); sparse safetensors, real-data torch files
BIG_FILES = {
    "llm_shard_a.safetensors": ("sparse-safetensors", 2 * GiB),
    "llm_shard_b.safetensors": ("sparse-safetensors", 2 * GiB),
    "trainer_epoch3.pt": ("torch-zip", 2 * GiB),
    "resnet_legacy.pt": ("torch-legacy", 1 * GiB),
}


def plan(n_files: int) -> dict[str, int]:
    """How many checkpoints of each kind make `n_files` files."""
    counts = {k: round(n_files * share) for k, share in MIX.items() if k != "hf"}
    counts["hf"] = (n_files - sum(counts.values())) // len(HF_FILES)
    return counts


# ---------------------------------------------------------------- data generation (child process only)


def _mlp(torch: Any, g: Any, width: int, depth: int, in_dim: int = 64, out_dim: int = 10) -> dict[str, Any]:
    """A small MLP state dict: `depth` hidden Linear layers of `width`, then a classifier head."""
    sd: dict[str, Any] = {}
    dims = [in_dim] + [width] * depth + [out_dim]
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        sd[f"layers.{i}.weight"] = torch.randn(b, a, generator=g) * 0.05
        sd[f"layers.{i}.bias"] = torch.zeros(b)
    return sd


def _adam(torch: Any, sd: dict[str, Any], g: Any, steps: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real torch.optim.Adam over `sd` after `steps` steps, and a StepLR scheduler: their state dicts."""
    params = [torch.nn.Parameter(t.clone()) for t in sd.values()]
    opt = torch.optim.Adam(params, lr=1e-3, foreach=False)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        opt.step()
        sched.step()
    return opt.state_dict(), sched.state_dict()


def _training_dict(torch: Any, g: Any, i: int) -> dict[str, Any]:
    """`{"epoch", "model_state_dict", "optimizer_state_dict", "loss"}`: ~50-200 KB with Adam moments."""
    width, depth = (40, 48, 56, 64, 72, 80)[i % 6], 1 + i % 2
    sd = _mlp(torch, g, width, depth)
    opt, _ = _adam(torch, sd, g)
    return {"epoch": i, "model_state_dict": sd, "optimizer_state_dict": opt, "loss": 2.5 / (1 + i)}


def _write_keras2_h5(path: Path, sd: dict[str, Any], step: int) -> None:
    """A Keras 2 `model.save("x.h5")` layout: root attrs, `model_weights/<layer>/<layer>/kernel:0`."""
    import h5py
    import numpy as np

    n_layers = len(sd) // 2
    names = [f"dense_{i}" for i in range(n_layers)]
    layers = [
        {
            "class_name": "Dense",
            "config": {
                "name": name,
                "units": int(sd[f"layers.{i}.bias"].shape[0]),
                "activation": "relu" if i < n_layers - 1 else "softmax",
                "use_bias": True,
            },
        }
        for i, name in enumerate(names)
    ]
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    training = {
        "loss": "sparse_categorical_crossentropy",
        "optimizer_config": {"class_name": "Adam", "config": {"learning_rate": 0.001}},
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["training_config"] = json.dumps(training)
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = "2.15.0"
        for i, name in enumerate(names):
            grp = mw.create_group(name)
            grp.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
            sub = grp.create_group(name)
            sub.create_dataset("kernel:0", data=sd[f"layers.{i}.weight"].numpy().T.copy())
            sub.create_dataset("bias:0", data=sd[f"layers.{i}.bias"].numpy())
        f.attrs["step"] = step


def _write_hf_dir(torch: Any, d: Path, g: Any, i: int, step: int) -> None:
    from safetensors.torch import save_file

    d.mkdir()
    sd = _mlp(torch, g, (48, 64, 80)[i % 3], 2)
    opt, sched = _adam(torch, sd, g)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    torch.save(opt, d / "optimizer.pt")
    torch.save(sched, d / "scheduler.pt")
    history = [{"epoch": k / 10, "step": (k + 1) * 10, "loss": 2.0 / (k + 1)} for k in range(step // 10 % 50)]
    state = {"global_step": step, "epoch": step / 1000, "log_history": history, "max_steps": 100000}
    (d / "trainer_state.json").write_text(json.dumps(state, indent=2))


def _generate_run(run: Path, counts: dict[str, int]) -> list[tuple[str, str]]:
    """Write the checkpoints into `run`; returns [(kind, path)] of every file for the full-load baseline,
    kind being how the baseline loads it: torch | safetensors | hdf5 | json."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    run.mkdir(parents=True)
    files: list[tuple[str, str]] = []
    for i in range(counts["zip"]):
        p = run / f"epoch{i:04d}-step{(i + 1) * 100}.pt"
        torch.save(_training_dict(torch, g, i), p)
        files.append(("torch", str(p)))
    for i in range(counts["safetensors"]):
        p = run / f"model-step{(i + 1) * 100:06d}.safetensors"
        sd = _mlp(torch, g, (48, 64, 96, 128)[i % 4], 1 + i % 4)
        save_file(sd, str(p), metadata={"format": "pt", "step": str((i + 1) * 100)})
        files.append(("safetensors", str(p)))
    for i in range(counts["legacy"]):
        p = run / f"legacy-epoch{i:04d}.pth"
        torch.save(_training_dict(torch, g, i), p, _use_new_zipfile_serialization=False)
        files.append(("torch", str(p)))
    for i in range(counts["h5"]):
        p = run / f"keras-step{(i + 1) * 100:06d}.h5"
        _write_keras2_h5(p, _mlp(torch, g, (32, 64, 128)[i % 3], 1 + i % 3), (i + 1) * 100)
        files.append(("hdf5", str(p)))
    for i in range(counts["hf"]):
        step = (i + 1) * 500
        d = run / f"checkpoint-{step}"
        _write_hf_dir(torch, d, g, i, step)
        kinds = ("safetensors", "torch", "torch", "json")
        files.extend((k, str(d / n)) for k, n in zip(kinds, HF_FILES, strict=True))
    return files


def _age(root: Path) -> None:
    t = time.time() - AGE_S
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            os.utime(os.path.join(dirpath, n), (t, t))
        os.utime(dirpath, (t, t))


def generate_small(top: Path, n_files: int) -> dict[str, Any]:
    """`top/run/` (the scanned run directory) and `top/warmup/` (one checkpoint per kind, for warm-ups)."""
    for sub in ("run", "warmup"):
        shutil.rmtree(top / sub, ignore_errors=True)
    counts = plan(n_files)
    files = _generate_run(top / "run", counts)
    warm = _generate_run(top / "warmup", {k: 1 for k in counts})
    _age(top / "run")
    _age(top / "warmup")
    return {"counts": counts, "files": files, "warmup_files": warm}


def generate_big(root: Path) -> dict[str, Any]:
    """The multi-GB directory. The safetensors data regions are sparse (a valid header, then `truncate`);
    the torch files hold real data (random float32)."""
    import torch

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tensors: dict[str, int] = {}
    for name, (kind, total) in BIG_FILES.items():
        p = root / name
        if kind == "sparse-safetensors":
            # 2 GiB of bf16 / fp32 matrices, 128 MiB each, plus a few small norms
            dtype, item = ("BF16", 2) if name.endswith("a.safetensors") else ("F32", 4)
            rows = 128 * MiB // item // 4096
            header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
            off = 0
            for i in range(total // (128 * MiB)):
                header[f"model.layers.{i}.mlp.weight"] = {
                    "dtype": dtype,
                    "shape": [rows, 4096],
                    "data_offsets": [off, off + rows * 4096 * item],
                }
                off += rows * 4096 * item
                header[f"model.layers.{i}.norm.weight"] = {
                    "dtype": dtype,
                    "shape": [4096],
                    "data_offsets": [off, off + 4096 * item],
                }
                off += 4096 * item
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            with open(p, "wb") as f:
                f.write(len(raw).to_bytes(8, "little"))
                f.write(raw)
                f.truncate(8 + len(raw) + off)
            tensors[name] = len(header) - 1
        else:
            g = torch.Generator().manual_seed(1)
            n = 4 if kind == "torch-zip" else 2
            numel = total // n // 4
            sd = {
                f"block{i}.weight": torch.empty(numel // 8192, 8192).uniform_(generator=g) for i in range(n)
            }
            sd["head.bias"] = torch.zeros(1000)
            if kind == "torch-zip":
                torch.save({"epoch": 3, "model_state_dict": sd, "loss": 0.42}, p)
            else:
                torch.save(sd, p, _use_new_zipfile_serialization=False)
            tensors[name] = len(sd)
            del sd
    _age(root)
    return {"tensors": tensors, "sizes": {p.name: p.stat().st_size for p in root.iterdir()}}


def _generate_main(kind: str, top: str, n: int) -> None:
    doc = generate_small(Path(top), n) if kind == "small" else generate_big(Path(top) / "ckpts")
    print(MARK + json.dumps(doc))


# ---------------------------------------------------------------- cached data (parent side)


def _want(kind: str, n: int) -> dict[str, Any]:
    return {"generator": GENERATOR_VERSION, "kind": kind, "n": n, "torch": package_version("torch")}


def _complete(top: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest when it matches `want` and every file it lists is there with its size."""
    doc = cached_manifest(top / "manifest.json", want)
    if doc is None:
        return None
    sizes = doc.get("file_sizes", {})
    for path, size in sizes.items():
        try:
            if os.path.getsize(path) != size:
                return None
        except OSError:
            return None
    return doc if sizes else None


def ensure_data(kind: str, top: Path, n: int, est_bytes: int) -> dict[str, Any]:
    want = _want(kind, n)
    doc = _complete(top, want)
    if doc is not None:
        log(f"reusing {top}")
        return doc
    check_disk_space(top, est_bytes)
    (top / "manifest.json").unlink(missing_ok=True)
    log(f"generating {top} (about {fmt_bytes(est_bytes)} on disk, free space checked)...")
    t0 = time.perf_counter()
    doc = want | run_marked(
        [sys.executable, __file__, "--_generate", kind, str(top), str(n)], "data generation"
    )
    doc["generate_s"] = round(time.perf_counter() - t0, 1)
    listed = [p for _, p in doc.get("files", [])] + [p for _, p in doc.get("warmup_files", [])]
    if kind == "big":
        listed = [str(top / "ckpts" / name) for name in doc["sizes"]]
    doc["file_sizes"] = {p: os.path.getsize(p) for p in listed}
    write_json(top / "manifest.json", doc)
    log(f"  generated in {doc['generate_s']} s")
    return doc


@dataclass
class SmallRun:
    """The generated run directory (`top/run/`) and its warm-up twin (`top/warmup/`), from the manifest."""

    run_dir: Path
    warm_dir: Path
    files: list[tuple[str, str]]  # (how the full-load baseline loads it, path) for every file in run/
    warm_files: list[tuple[str, str]]  # the same for warmup/
    counts: dict[str, int]  # checkpoints per kind
    total_bytes: int  # of the files in run/

    @classmethod
    def from_manifest(cls, top: Path, doc: dict[str, Any]) -> SmallRun:
        files = [(k, p) for k, p in doc["files"]]
        warm = [(k, p) for k, p in doc["warmup_files"]]
        total = sum(os.path.getsize(p) for _, p in files)
        return cls(top / "run", top / "warmup", files, warm, doc["counts"], total)

    @property
    def expected(self) -> int:
        """Checkpoints the scan must find (an HF directory is one)."""
        return sum(self.counts.values())

    @property
    def st_files(self) -> list[str]:
        """The standalone safetensors files (not an HF directory's model.safetensors)."""
        return [p for k, p in self.files if k == "safetensors" and not p.endswith("/model.safetensors")]


# ---------------------------------------------------------------- measurements

_SCAN_SETUP = """
import collections, os, uuid
from ckptlab.index.store import Store
from ckptlab.index.scan import scan

def _summary(r):
    d = dict(r.to_json()["stats"])
    d["status"] = dict(collections.Counter(e.status for e in r.entries))
    d["layouts"] = dict(collections.Counter(e.layout for e in r.entries))
    d["errors"] = r.errors[:5]
    return d
"""


def scan_spec(label: str, root: Path, warm_root: Path, db_dir: Path, workers: int, db: Path | None) -> Spec:
    """A scan of `root` in a fresh process: into a fresh database (`db` None: cold) or into `db` (warm)."""
    target = repr(str(db)) if db else f"os.path.join({str(db_dir)!r}, uuid.uuid4().hex + '.sqlite')"
    return Spec(
        label,
        stmt=f"_result = scan([{str(root)!r}], Store(_db), workers={workers})",
        setup=_SCAN_SETUP + f"_db = {target}\n",
        warmup=f"scan([{str(warm_root)!r}], "
        f"Store(os.path.join({str(db_dir)!r}, uuid.uuid4().hex + '-w.sqlite')), workers={workers})",
        extra="_summary(_result)",
    )


_LOAD_SETUP = """
import json
import h5py
import torch
from safetensors.torch import load_file

def _h5(p):
    out = []
    with h5py.File(p, "r") as f:
        f.visititems(lambda name, obj: out.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out

def _load(kind, p):
    if kind == "torch":
        return torch.load(p, weights_only=True)
    if kind == "safetensors":
        return load_file(p)
    if kind == "hdf5":
        return _h5(p)
    with open(p) as f:
        return json.load(f)
"""


def load_spec(label: str, files_json: Path, warm_json: Path) -> Spec:
    return Spec(
        label,
        stmt="""
            _n = 0
            for _k, _p in _files:
                _load(_k, _p)
                _n += 1
            _result = _n
        """,
        setup=_LOAD_SETUP + f"_files = json.load(open({str(files_json)!r}))\n"
        f"_warm = json.load(open({str(warm_json)!r}))\n",
        warmup="for _k, _p in _warm:\n    _load(_k, _p)",
        extra="_result",
    )


def read_meta_spec(label: str, files_json: Path) -> Spec:
    return Spec(
        label,
        stmt="""
            for _p in _files:
                _result = ckptlab.read_meta(_p)
        """,
        setup=f"import json, ckptlab\n_files = json.load(open({str(files_json)!r}))",
        warmup="for _p in _files:\n    ckptlab.read_meta(_p)",
        extra="{'n_tensors': _result.n_tensors, 'format': _result.format}",
    )


_FLOOR = """
def _floor(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        (n,) = struct.unpack("<Q", os.read(fd, 8))
        return json.loads(os.pread(fd, n, 8))
    finally:
        os.close(fd)
"""


def floor_spec(label: str, files_json: Path) -> Spec:
    return Spec(
        label,
        stmt="""
            for _p in _files:
                _result = _floor(_p)
        """,
        setup=f"import json, os, struct\n{_FLOOR}\n_files = json.load(open({str(files_json)!r}))",
        warmup="for _p in _files:\n    _floor(_p)",
        extra="len(_result)",
    )


# a fresh interpreter that does one cold scan (no warm-up) and reports its memory and I/O counters
_PROBE = (
    f"_MARK = {MARK!r}\n"
    + """
import json, resource, sys, time

def _io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}

def _hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

from ckptlab.index.store import Store
from ckptlab.index.scan import scan

if sys.argv[3] == "preimport":  # the reader modules scan() would otherwise import lazily (.pyc reads)
    import ckptlab.formats.multifile, ckptlab.formats.safetensors_reader, ckptlab.formats.torch_reader
    import ckptlab.formats.hdf5_reader
store = Store(sys.argv[2])
io0 = _io()
t0 = time.perf_counter()
r = scan([sys.argv[1]], store, workers=int(sys.argv[4]))
dt = time.perf_counter() - t0
io1 = _io()
doc = {
    "seconds": dt,
    "stats": r.to_json()["stats"],
    "status": sorted({e.status for e in r.entries}),
    "n_tensors": {e.path: e.n_tensors for e in r.entries},
    "errors": r.errors[:5],
    "io": {k: io1[k] - io0[k] for k in io0},
    "vmhwm": _hwm(),
    "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "children_ru_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "modules": sorted(m for m in ("torch", "h5py", "numpy") if m in sys.modules),
}
print(_MARK + json.dumps(doc))
"""
)


def probe_scan(root: Path, db: Path, preimport: bool = False, workers: int = 8) -> dict[str, Any]:
    """One cold scan of `root` into a new database `db` in a fresh interpreter: stats, memory, I/O."""
    db.unlink(missing_ok=True)
    argv = [sys.executable, "-c", _PROBE, str(root), str(db), "preimport" if preimport else "-", str(workers)]
    return run_marked(argv, "scan probe", timeout=600)


KIND_LABELS = {
    "zip": "`torch.save` zip training dict",
    "legacy": "legacy `torch.save` training dict",
    "safetensors": "safetensors state dict",
    "h5": "Keras 2 `.h5`",
    "hf": "HF `checkpoint-N/` dir (4 files)",
}


def group_by_kind(files: Sequence[tuple[str, str]], run: Path) -> dict[str, list[list[tuple[str, str]]]]:
    """Checkpoints of each kind, each as its [(load kind, file)] parts (several for an HF directory)."""
    out: dict[str, list[list[tuple[str, str]]]] = {k: [] for k in KIND_LABELS}
    hf: dict[str, list[tuple[str, str]]] = {}
    for kind, p in files:
        parent = Path(p).parent
        if parent != run:
            hf.setdefault(str(parent), []).append((kind, p))
        elif kind == "hdf5":
            out["h5"].append([(kind, p)])
        elif kind == "safetensors":
            out["safetensors"].append([(kind, p)])
        else:
            out["legacy" if p.endswith(".pth") else "zip"].append([(kind, p)])
    out["hf"] = list(hf.values())
    return out


def _ckpt_path(parts: list[tuple[str, str]]) -> str:
    return str(Path(parts[0][1]).parent) if len(parts) > 1 else parts[0][1]


def per_kind(
    groups: dict[str, list[list[tuple[str, str]]]],
    warm: dict[str, list[list[tuple[str, str]]]],
    tmp: Path,
    inner: int,
) -> list[dict[str, Any]]:
    """Informational: per checkpoint kind, ckptlab's metadata read vs full loads, each side in one fresh
    process (imports and a warm-up on the warm-up checkpoint of that kind untimed), median of `inner`
    in-process loops. HDF5 files are read as the scanner reads them: one batch through one h5py worker."""
    out = []
    for kind, ckpts in groups.items():
        if not ckpts:
            continue
        ours_json = _files_json(tmp, f"k-{kind}.json", [_ckpt_path(c) for c in ckpts])
        ours_warm = _files_json(tmp, f"kw-{kind}.json", [_ckpt_path(c) for c in warm[kind]])
        base_json = _files_json(tmp, f"kb-{kind}.json", ckpts)
        base_warm = _files_json(tmp, f"kbw-{kind}.json", warm[kind])
        if kind == "h5":
            setup = (
                "import json\nfrom pathlib import Path\n"
                "from ckptlab.formats.hdf5_reader import read_hdf5_many\n"
                "from ckptlab.formats.limits import DEFAULT_LIMITS\n"
                "def _read(ps):\n    return read_hdf5_many([Path(p) for p in ps], DEFAULT_LIMITS)\n"
            )
        else:
            setup = "import json, ckptlab\ndef _read(ps):\n    return [ckptlab.read_meta(p) for p in ps]\n"
        setup += (
            f"_items = json.load(open({str(ours_json)!r}))\n_warm = json.load(open({str(ours_warm)!r}))\n"
        )
        ours = run_worker(
            "_result = _read(_items)", setup=setup, warmup="_read(_warm)", inner=inner, extra="len(_result)"
        )
        load = "def _loads(cs):\n    for c in cs:\n        for k, p in c:\n            _load(k, p)\n"
        bsetup = (
            _LOAD_SETUP
            + load
            + f"_items = json.load(open({str(base_json)!r}))\n_warm = json.load(open({str(base_warm)!r}))\n"
        )
        base = run_worker("_loads(_items)", setup=bsetup, warmup="_loads(_warm)", inner=inner)
        t_ours, t_base = median(ours["times"]) / len(ckpts), median(base["times"]) / len(ckpts)
        size = sum(os.path.getsize(p) for c in ckpts for _, p in c) / len(ckpts)
        out.append(
            {"kind": kind, "n": len(ckpts), "avg_bytes": size, "ckptlab_s": t_ours, "full_load_s": t_base}
        )
        log(f"  {kind}: read_meta {fmt_seconds(t_ours)}, full load {fmt_seconds(t_base)} per checkpoint")
    return out


def per_kind_table(rows: list[dict[str, Any]]) -> str:
    headers = ("kind", "checkpoints", "avg size", "full load / ckpt", "ckptlab read / ckpt", "ratio")
    return markdown_table(
        headers,
        (
            (
                KIND_LABELS[r["kind"]],
                r["n"],
                fmt_bytes(r["avg_bytes"]),
                fmt_seconds(r["full_load_s"]),
                fmt_seconds(r["ckptlab_s"]),
                fmt_ratio(r["full_load_s"] / r["ckptlab_s"]),
            )
            for r in rows
        ),
    )


def check_scan(m: Measurement, expected: int, n_files: int, warm: bool) -> None:
    """The scan must have found and read (cold) or reused (warm) every checkpoint, all of them `ok`."""
    e = m.extra
    bad = []
    if e["checkpoints"] != expected or e["files_seen"] != n_files:
        bad.append(f"{e['checkpoints']} checkpoints / {e['files_seen']} files, want {expected} / {n_files}")
    if e["status"] != {"ok": expected}:
        bad.append(f"statuses {e['status']}, errors {e['errors']}")
    if warm and (e["reused"] != expected or e["parsed"] != 0):
        bad.append(f"warm re-scan parsed {e['parsed']}, reused {e['reused']}")
    if not warm and e["parsed"] != expected:
        bad.append(f"cold scan parsed {e['parsed']}")
    if "torch" in m.modules:
        bad.append("torch was imported by the scan")
    if bad:
        raise SystemExit(f"{m.label}: " + "; ".join(bad))


def _files_json(tmp: Path, name: str, items: Sequence[Any]) -> Path:
    p = tmp / name
    p.write_text(json.dumps(list(items)))
    return p


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 files, fewer repeats, no multi-GB case")
    ap.add_argument("--files", type=int, help="files in the small-checkpoint run dir (default 2000 / 200)")
    ap.add_argument("--repeats", type=int, help="repeats per timed side (default 5, or 3 with --quick)")
    ap.add_argument("--workers", type=int, default=8, help="scan thread-pool size (default 8, the API's)")
    ap.add_argument("--no-big", action="store_true", help="skip the multi-GB directory case")
    ap.add_argument("--_generate", nargs=3, help=argparse.SUPPRESS)
    args = parse_args(ap, argv)
    if args._generate:
        kind, top, n = args._generate
        _generate_main(kind, top, int(n))
        return 0
    n_files = args.files or (200 if args.quick else 2000)
    repeats = args.repeats or (3 if args.quick else 5)
    meta_repeats = max(repeats, 7)
    big_case = not (args.quick or args.no_big)
    t_start = time.perf_counter()
    info = machine_info()

    # ---- data
    top = data_dir(f"scan{n_files}")
    small = SmallRun.from_manifest(top, ensure_data("small", top, n_files, n_files * 200 * 1024))
    big = None
    if big_case:
        big_top = data_dir("big")
        est = sum(size for kind, size in BIG_FILES.values() if not kind.startswith("sparse"))
        big = ensure_data("big", big_top, len(BIG_FILES), est)

    tmp = Path(tempfile.mkdtemp(prefix="ckptlab-bench-scan-"))
    try:
        rows, notes, extra_json = _measure(
            small, big, tmp, args.workers, repeats, meta_repeats, info["cores"]
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    appendix = ""
    if extra_json.get("per_kind"):
        appendix = (
            "\nPer checkpoint kind (informational; in-process loops over all checkpoints of the kind, "
            "median of 3, one fresh process per side; ckptlab = `read_meta`, HDF5 = one `read_hdf5_many` "
            "batch as the scanner does):\n\n" + per_kind_table(extra_json["per_kind"])
        )
    return report(
        "scan",
        "quick" if args.quick else "full",
        info,
        rows,
        notes,
        repeats=repeats,
        json_path=args.json,
        json_extra={
            "data": {"counts": small.counts, "files": len(small.files), "bytes": small.total_bytes},
            **extra_json,
            "notes": notes,
        },
        result_note=f" Total benchmark time {time.perf_counter() - t_start:.0f} s.",
        appendix=appendix,
    )


def _measure(
    small: SmallRun,
    big: dict[str, Any] | None,
    tmp: Path,
    workers: int,
    repeats: int,
    meta_repeats: int,
    cores: int,
) -> tuple[list[Row], list[str], dict[str, Any]]:
    rows: list[Row] = []
    notes: list[str] = []
    out: dict[str, Any] = {}
    run_dir, warm_dir, files, counts = small.run_dir, small.warm_dir, small.files, small.counts
    expected, st_files = small.expected, small.st_files
    n_files = len(files)
    all_paths = [p for _, p in files]
    files_json = _files_json(tmp, "files.json", files)
    warm_json = _files_json(tmp, "warm.json", small.warm_files)
    st_json = _files_json(tmp, "st.json", st_files)

    # 1a/1b. cold scan vs full loads, warm re-scan vs cold scan. The warm side re-scans a database that one
    # cold scan (untimed, below) filled; a warm re-scan changes nothing in it, so every repeat sees the same.
    warm_db = tmp / "warm.sqlite"
    r = probe_scan(run_dir, warm_db, workers=workers)
    if r["stats"]["checkpoints"] != expected or r["status"] != ["ok"]:
        raise SystemExit(f"preparatory scan: {r['stats']} {r['status']} {r['errors']}")
    cold = scan_spec("cold scan", run_dir, warm_dir, tmp, workers, None)
    warm = scan_spec("warm re-scan", run_dir, warm_dir, tmp, workers, warm_db)
    base = load_spec("full loads", files_json, warm_json)
    for s in (cold, warm, base):
        s.warm_files = all_paths
    log(f"measuring scans of {n_files} files, {repeats} repeats per side, each in a fresh process...")
    m_cold, m_warm, m_load = measure_interleaved([cold, warm, base], repeats)
    check_scan(m_cold, expected, n_files, warm=False)
    check_scan(m_warm, expected, n_files, warm=True)
    if m_load.extra != n_files:
        raise SystemExit(f"the full-load loop loaded {m_load.extra} files, want {n_files}")
    mix = (
        f"{counts['zip']} zip, {counts['safetensors']} safetensors, {counts['legacy']} legacy, "
        f"{counts['h5']} Keras .h5, {counts['hf']} HF dirs"
    )
    case = f"1a. cold scan, {n_files} files / {expected} ckpts ({fmt_bytes(small.total_bytes)}; {mix})"
    rows.append(Row.ratio_row(case, "loop of full loads of the same files", m_load, m_cold, 5, key="1a"))
    case = "1b. warm re-scan, nothing changed"
    rows.append(Row.ratio_row(case, "cold scan (1a)", m_cold, m_warm, 20, key="1b"))

    # 1c. read_meta per safetensors file vs the syscall + json floor
    log(f"measuring read_meta vs the floor on {len(st_files)} safetensors files, {meta_repeats} repeats...")
    ours, floor = measure_interleaved(
        [read_meta_spec("read_meta safetensors", st_json), floor_spec("floor", st_json)], meta_repeats
    )
    if not ours.extra["n_tensors"] or ours.extra["format"] != "safetensors" or "torch" in ours.modules:
        raise SystemExit(f"read_meta check failed: {ours.extra}, modules {ours.modules}")
    per_ours, per_floor = ours.median / len(st_files), floor.median / len(st_files)
    ratio = per_ours / per_floor
    row_1c = Row(
        f"1c. `read_meta` per safetensors file ({len(st_files)} files, in-process loop); "
        "ratio = ckptlab/floor",
        "`open`+`read(8)`+`pread(n)`+`json.loads`",
        floor,
        ours,
        "≤ 2.0×",
        passed=ratio <= 2.0,
        ratio=ratio,
        note=f"per file: ckptlab {fmt_seconds(per_ours)}, floor {fmt_seconds(per_floor)}",
        key="1c",
        inverse=True,
    )
    rows.append(row_1c)
    notes.append(
        f"1c per file: ckptlab {fmt_seconds(per_ours)}, floor {fmt_seconds(per_floor)}; on process CPU time "
        f"the ratio is {fmt_ratio(row_1c.cpu_ratio)} "
        f"(medians of {meta_repeats} loops over the same {len(st_files)} files, each loop in a fresh process "
        "after one untimed loop); ratio = ckptlab / floor, lower is better."
    )

    # 1d. peak RSS of a fresh process doing the cold scan (no warm-up: imports included)
    log("measuring peak RSS of a fresh cold-scan process (3 runs)...")
    probes = [probe_scan(run_dir, tmp / f"rss{i}.sqlite", workers=workers) for i in range(3)]
    peak = max(p["vmhwm"] for p in probes)
    maxrss = max(p["ru_maxrss"] for p in probes)
    child = max(p["children_ru_maxrss"] for p in probes)
    rows.append(
        Row(
            f"1d. peak RSS, fresh process: import + cold scan of {n_files} files",
            "—",
            None,
            None,
            "< 300 MB",
            passed=peak < 300 * MB and maxrss < 300 * MB,
            ckptlab_value=f"{peak / MB:.0f} MB ({fmt_bytes(peak)})",
            key="1d",
        )
    )
    notes.append(
        f"1d: worst of 3 fresh processes: VmHWM {fmt_bytes(peak)}, ru_maxrss {fmt_bytes(maxrss)} "
        "(ru_maxrss can include the parent's RSS at spawn; this parent is stdlib-only). HDF5 files are "
        f"parsed in a separate h5py worker process: its ru_maxrss (RUSAGE_CHILDREN) is {fmt_bytes(child)}, "
        "not counted above (an upper bound: Linux carries the spawning process's high-water mark into it)."
    )
    out["rss_probes"] = [{k: v for k, v in p.items() if k != "n_tensors"} for p in probes]

    # informational: the scan's own stats and where the cold-scan time is relative to per-file work
    notes.append(
        f"Cold scan {fmt_seconds(m_cold.median)} = {fmt_seconds(m_cold.median / n_files)} per file "
        f"(workers={workers} threads on {cores} cores); warm re-scan "
        f"{fmt_seconds(m_warm.median)} = {fmt_seconds(m_warm.median / n_files)} per file; full loads "
        f"{fmt_seconds(m_load.median / n_files)} per file (one thread; torch, safetensors, h5py imported and "
        "warmed up before the timer)."
    )
    cpu = [f"{r.key} {fmt_ratio(r.cpu_ratio)}" for r in rows[:2] if r.cpu_ratio is not None]
    notes.append(
        "The same ratios on process CPU time (the h5py worker's CPU is not included, it is a child): "
        + ", ".join(cpu)
        + "."
    )

    # informational: per checkpoint kind, where the time goes on both sides
    log("per-kind breakdown (informational)...")
    groups = group_by_kind(files, run_dir)
    warm_groups = group_by_kind(small.warm_files, warm_dir)
    out["per_kind"] = per_kind(groups, warm_groups, tmp, inner=3)

    # 2. the multi-GB directory: bytes read by the scanning process
    if big is not None:
        root = data_dir("big") / "ckpts"
        total = sum(big["sizes"].values())
        log("scanning the multi-GB directory and counting bytes read...")
        p = probe_scan(root, tmp / "big.sqlite", workers=workers)
        p2 = probe_scan(root, tmp / "big2.sqlite", preimport=True, workers=workers)
        want = {str(root / n): t for n, t in big["tensors"].items()}
        got = {k: v for k, v in p["n_tensors"].items()}
        if p["status"] != ["ok"] or got != want:
            raise SystemExit(
                f"multi-GB scan: status {p['status']}, tensors {got}, want {want}, {p['errors']}"
            )
        rchar, read_bytes = p["io"]["rchar"], p["io"]["read_bytes"]
        frac = rchar / total
        names = ", ".join(f"{n} {fmt_bytes(s)}" for n, s in big["sizes"].items())
        rows.append(
            Row(
                f"2. scan of {len(big['sizes'])} multi-GB ckpts ({fmt_bytes(total)}): "
                "bytes read / bytes on disk",
                "—",
                None,
                None,
                "< 1 %",
                passed=frac < 0.01,
                ckptlab_value=f"{fmt_bytes(rchar)} = {frac * 100:.4f} % (in {fmt_seconds(p['seconds'])})",
                key="2",
            )
        )
        notes.append(
            f"2: files {names}. Bytes read by the scanning process from `/proc/self/io` around `scan()` "
            f"(fresh process, fresh database): rchar {rchar:,} B (every read()/pread() byte, page-cache hits "
            f"included; {p2['io']['rchar']:,} B of it when the reader modules scan() imports lazily are "
            f"imported first, i.e. the rest is .pyc reads), read_bytes {read_bytes:,} B (fetched from the "
            "block device, .pyc files included; 0 when everything is cached). mmap is "
            "not used on the metadata path (only `ckptlab.loading` maps files), so rchar is a complete "
            "measure. The safetensors data regions are sparse (the scanner never reads them); the torch "
            "files hold real data."
        )
        out["big"] = {"probe": p, "probe_preimported": p2, "sizes": big["sizes"], "total": total}
    return rows, notes, out


if __name__ == "__main__":
    sys.exit(main())
