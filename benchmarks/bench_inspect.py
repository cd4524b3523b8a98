"""Benchmark: ckptlab's header-only metadata read (`read_meta`, `ckptlab inspect`) against `torch.load`.

Cases, all on the same generated files in one run:

1. ~200 MB safetensors state dict: `read_meta` vs a full `torch.load` of the same state dict saved as a
   `.pt` zip (target ≥ 500×);
2. ~200 MB `torch.save` zip training checkpoint (`epoch`, `model_state_dict`, Adam `optimizer_state_dict`):
   `read_meta` vs full `torch.load(weights_only=True)` (≥ 50×) and vs
   `torch.load(map_location="meta", weights_only=True)` (≥ 5×);
3. the same training checkpoint in the legacy format (`_use_new_zipfile_serialization=False`): `read_meta`
   vs full `torch.load` (≥ 100×);
4. `ckptlab inspect --json` on a small file as a subprocess (median wall time < 0.5 s), and proof that the
   metadata path never imports torch.

Method (see `_common.py`): every repeat is a fresh subprocess; torch / ckptlab are imported and warmed up on a
tiny file of the same format before the timer starts; the big file is read once before every repeat so both
sides are measured with a warm page cache; medians of the repeats; ratio = baseline median / ckptlab median;
peak RSS is what the timed call added on top of the warmed interpreter, with the absolute peak beside it.

    python benchmarks/bench_inspect.py            # full run (~200 MB files, a few minutes)
    python benchmarks/bench_inspect.py --quick    # smoke run (~20 MB files, fewer repeats)
    python benchmarks/bench_inspect.py --json results.json

Exit status: 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
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
    measure_interleaved,
    median,
    module_peak_rss,
    package_version,
    parse_args,
    report,
    run_command,
    run_worker,
    warm_page_cache,
    write_json,
)

GENERATOR_VERSION = 2


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-ish stack: embeddings, `blocks` pre-LN transformer blocks (the last `bf16_blocks` in bfloat16),
    final LayerNorm and an untied LM head. 16 tensors per block."""

    d: int
    blocks: int
    bf16_blocks: int
    vocab: int
    ctx: int

    def n_params(self) -> int:
        d = self.d
        return 2 * self.vocab * d + self.ctx * d + 2 * d + self.blocks * (12 * d * d + 13 * d)


FULL = ModelConfig(d=512, blocks=16, bf16_blocks=4, vocab=8192, ctx=1024)  # ~202 MiB, 261 tensors
QUICK = ModelConfig(d=160, blocks=16, bf16_blocks=4, vocab=4096, ctx=512)  # ~21 MiB, same tensor count
TINY = ModelConfig(d=32, blocks=2, bf16_blocks=1, vocab=64, ctx=16)  # warm-up and CLI file


@dataclass
class Files:
    safetensors: Path  # the state dict
    sd_pt: Path  # the same state dict, torch.save zip
    sd_legacy: Path  # the same state dict, legacy format (how model-zoo weights were long shipped)
    train_pt: Path  # training checkpoint, torch.save zip
    train_legacy: Path  # the same training checkpoint, legacy format
    info: dict[str, Any]


# ---------------------------------------------------------------- data


def state_dict(cfg: ModelConfig) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    d = cfg.d

    def w(*shape: int, dtype: Any = torch.float32) -> Any:
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    sd: dict[str, Any] = {
        "transformer.wte.weight": w(cfg.vocab, d),
        "transformer.wpe.weight": w(cfg.ctx, d),
    }
    for i in range(cfg.blocks):
        dt = torch.bfloat16 if i >= cfg.blocks - cfg.bf16_blocks else torch.float32
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = torch.ones(d, dtype=dt)
        sd[p + "ln_1.bias"] = torch.zeros(d, dtype=dt)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + f"attn.{n}.weight"] = w(d, d, dtype=dt)
            sd[p + f"attn.{n}.bias"] = w(d, dtype=dt)
        sd[p + "ln_2.weight"] = torch.ones(d, dtype=dt)
        sd[p + "ln_2.bias"] = torch.zeros(d, dtype=dt)
        sd[p + "mlp.fc_in.weight"] = w(4 * d, d, dtype=dt)
        sd[p + "mlp.fc_in.bias"] = w(4 * d, dtype=dt)
        sd[p + "mlp.fc_out.weight"] = w(d, 4 * d, dtype=dt)
        sd[p + "mlp.fc_out.bias"] = w(d, dtype=dt)
    sd["transformer.ln_f.weight"] = torch.ones(d)
    sd["transformer.ln_f.bias"] = torch.zeros(d)
    sd["lm_head.weight"] = w(cfg.vocab, d)
    return sd


def training_checkpoint(sd: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """Fine-tuning-shaped checkpoint: Adam (real `torch.optim.Adam`, one step) over every bias and LayerNorm
    parameter plus the whole last block, so the optimizer adds many small tensors but little size."""
    import torch

    last = f"transformer.h.{cfg.blocks - 1}."
    names = [k for k in sd if k.endswith(".bias") or ".ln_" in k or k.startswith(last)]
    params = [torch.nn.Parameter(sd[k].detach().clone()) for k in names]
    opt = torch.optim.Adam(params, lr=3e-4, foreach=False)
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(p.dtype)
    opt.step()
    return {
        "epoch": 3,
        "global_step": 12000,
        "model_state_dict": sd,
        "optimizer_state_dict": opt.state_dict(),
        "loss": 2.3183,
        "config": {"d_model": cfg.d, "n_layer": cfg.blocks, "vocab_size": cfg.vocab, "optimized": names},
    }


def write_files(cfg: ModelConfig, d: Path, stem: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    sd = state_dict(cfg)
    save_file(sd, str(d / f"{stem}.safetensors"), metadata={"format": "pt"})
    torch.save(sd, d / f"{stem}_sd.pt")
    torch.save(sd, d / f"{stem}_sd_legacy.pt", _use_new_zipfile_serialization=False)
    ckpt = training_checkpoint(sd, cfg)
    torch.save(ckpt, d / f"{stem}_train.pt")
    torch.save(ckpt, d / f"{stem}_train_legacy.pt", _use_new_zipfile_serialization=False)
    opt_tensors = sum(len(s) for s in ckpt["optimizer_state_dict"]["state"].values())
    return {
        "config": asdict(cfg),
        "state_dict_tensors": len(sd),
        "params": sum(t.numel() for t in sd.values()),
        "optimizer_tensors": opt_tensors,
    }


def ensure_files(cfg: ModelConfig, d: Path, stem: str) -> Files:
    """Generate the five files for `cfg` in `d`, or reuse them when the manifest says they match."""
    manifest = d / f"{stem}.manifest.json"
    suffixes = (".safetensors", "_sd.pt", "_sd_legacy.pt", "_train.pt", "_train_legacy.pt")
    paths = [d / f"{stem}{suffix}" for suffix in suffixes]
    want = {"generator": GENERATOR_VERSION, "config": asdict(cfg), "torch": package_version("torch")}
    info = cached_manifest(manifest, want) if all(p.exists() for p in paths) else None
    if info is None:
        est = 5 * 4 * cfg.n_params()  # five files, float32 upper bound
        check_disk_space(d, est)
        log(f"generating {stem} files in {d} (about {fmt_bytes(est)}, disk checked)...")
        info = want | write_files(cfg, d, stem)
        write_json(manifest, info)
    else:
        log(f"reusing {stem} files in {d}")
    info["sizes"] = {p.name: p.stat().st_size for p in paths}
    return Files(*paths, info=info)


# ---------------------------------------------------------------- measurements

_META_EXTRA = (
    "{'format': _result.format, 'n_tensors': _result.n_tensors, 'n_params': _result.n_params, "
    "'other_tensors': len(_result.other_tensors), 'epoch': _result.epoch, "
    "'has_optimizer': _result.has_optimizer}"
)


def ckptlab_meta(label: str, big: Path, tiny: Path) -> Spec:
    return Spec(
        label,
        stmt=f"_result = ckptlab.read_meta({str(big)!r})",
        setup="import ckptlab",
        warmup=f"ckptlab.read_meta({str(tiny)!r})",
        warm_files=[big],
        extra=_META_EXTRA,
    )


def ckptlab_steady(big: Path, n: int) -> float:
    """Informational: median of `n` calls in ONE process after a warm-up call on the same file."""
    warm_page_cache(big)
    r = run_worker(
        f"_result = ckptlab.read_meta({str(big)!r})",
        setup="import ckptlab",
        warmup=f"ckptlab.read_meta({str(big)!r})",
        inner=n,
    )
    return median(r["times"])


def torch_load(label: str, big: Path, tiny: Path, meta: bool = False) -> Spec:
    kw = "map_location='meta', weights_only=True" if meta else "weights_only=True"
    return Spec(
        label,
        stmt=f"_result = torch.load({str(big)!r}, {kw})",
        setup="import torch",
        warmup=f"torch.load({str(tiny)!r}, {kw})",
        warm_files=[big],
        extra="type(_result).__name__",
    )


def check_meta(m: Measurement, info: dict[str, Any], training: bool) -> None:
    """The ckptlab side must have really read the checkpoint: right tensor count and params, no torch."""
    e = m.extra
    want = (info["state_dict_tensors"], info["params"])
    if (e["n_tensors"], e["n_params"]) != want:
        raise SystemExit(
            f"{m.label}: read_meta found {e['n_tensors']} tensors/{e['n_params']} params, want {want}"
        )
    if training and (e["other_tensors"] != info["optimizer_tensors"] or not e["has_optimizer"]):
        raise SystemExit(f"{m.label}: optimizer state not found ({e})")
    if "torch" in m.modules:
        raise SystemExit(f"{m.label}: torch was imported by the metadata path")


def torch_imported_after_read_meta(path: Path) -> bool:
    """The check from the issue, verbatim, in its own interpreter."""
    code = "import ckptlab, sys; ckptlab.read_meta(sys.argv[1]); print('torch' in sys.modules)"
    r = run_command([sys.executable, "-c", code, str(path)])
    if r.returncode != 0:
        raise SystemExit(f"read_meta failed on {path}: {r.stderr}")
    return r.stdout.strip() == "True"


def ckptlab_command() -> list[str]:
    """The installed console script (next to this interpreter, as in a venv), else `python -m ckptlab`."""
    exe = Path(sys.executable).with_name("ckptlab")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ckptlab")
    return [found] if found else [sys.executable, "-m", "ckptlab"]


def cli_inspect(label: str, path: Path, repeats: int) -> Measurement:
    """Wall time of `ckptlab inspect --json PATH` as a subprocess (spawn to exit), and its peak RSS."""
    cmd = [*ckptlab_command(), "inspect", "--json", str(path)]
    m = Measurement(label)
    run_command(cmd)  # untimed: .pyc files written, binaries in the page cache
    for _ in range(repeats):
        warm_page_cache(path)
        r = run_command(cmd)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
        doc = json.loads(r.stdout)
        m.times.append(r.wall)
        log(f"  {label}: {fmt_seconds(r.wall)}")
    peak = module_peak_rss("ckptlab", ["inspect", "--json", str(path)])
    if peak is not None:
        m.peaks.append(peak)
    m.extra = {"command": cmd, "format": doc.get("format"), "n_tensors": len(doc.get("tensors", []))}
    return m


def cli_imports_torch(path: Path) -> bool:
    """Run `python -X importtime -m ckptlab inspect --json PATH` and look for torch in the import log."""
    r = run_command([sys.executable, "-X", "importtime", "-m", "ckptlab", "inspect", "--json", str(path)])
    if r.returncode != 0:
        raise SystemExit(f"ckptlab inspect failed on {path}: {r.stderr[-2000:]}")
    mods = {
        line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time")
    }
    return any(m == "torch" or m.startswith("torch.") for m in mods)


def python_startup(repeats: int) -> float:
    return median(run_command([sys.executable, "-c", "pass"]).wall for _ in range(repeats))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~20 MB files and fewer repeats (smoke run)")
    ap.add_argument("--repeats", type=int, help="repeats per measurement (default 7, or 3 with --quick)")
    args = parse_args(ap, argv)
    cfg, stem = (QUICK, "quick") if args.quick else (FULL, "full")
    repeats = args.repeats or (3 if args.quick else 7)
    cli_repeats = max(repeats, 5)
    d = data_dir("inspect")

    info = machine_info()
    tiny = ensure_files(TINY, d, "tiny")
    big = ensure_files(cfg, d, stem)
    sizes = big.info["sizes"]
    n_sd, n_opt = big.info["state_dict_tensors"], big.info["optimizer_tensors"]

    def mib(p: Path) -> str:
        return f"{sizes[p.name] / MiB:.0f} MiB"

    log(f"measuring, {repeats} repeats per side, each in a fresh process...")
    rows: list[Row] = []
    steady: dict[str, float] = {}

    def compare(ours: Spec, *baselines: Spec, training: bool) -> list[Measurement]:
        """ckptlab and its baselines on one file, repeats interleaved; returns [ckptlab, *baselines]."""
        ms = measure_interleaved([ours, *baselines], repeats)
        check_meta(ms[0], big.info, training)
        f = Path(ours.warm_files[0])
        steady[f.name] = ckptlab_steady(f, max(repeats, 10))
        return ms

    # 1. safetensors metadata vs full torch.load of the same state dict
    m, base = compare(
        ckptlab_meta("read_meta safetensors", big.safetensors, tiny.safetensors),
        torch_load("torch.load sd zip", big.sd_pt, tiny.sd_pt),
        training=False,
    )
    case = f"1. safetensors state dict, {mib(big.safetensors)}, {n_sd} tensors"
    baseline = f"full `torch.load` of the same state dict as `.pt` zip ({mib(big.sd_pt)})"
    rows.append(Row.ratio_row(case, baseline, base, m, 500, key="1"))

    # 2. zip training checkpoint: full load and meta-device load
    m, base, base_meta = compare(
        ckptlab_meta("read_meta zip", big.train_pt, tiny.train_pt),
        torch_load("torch.load zip", big.train_pt, tiny.train_pt),
        torch_load("torch.load zip meta", big.train_pt, tiny.train_pt, meta=True),
        training=True,
    )
    case = f"2. `.pt` zip training ckpt, {mib(big.train_pt)}, {n_sd} + {n_opt} optimizer tensors"
    rows.append(Row.ratio_row(case, "full `torch.load(weights_only=True)`", base, m, 50, key="2-full"))
    meta_baseline = '`torch.load(map_location="meta", weights_only=True)`'
    rows.append(Row.ratio_row(case, meta_baseline, base_meta, m, 5, key="2-meta"))

    # 3. legacy format: the state dict (model-zoo style) and the training checkpoint
    m, base = compare(
        ckptlab_meta("read_meta legacy sd", big.sd_legacy, tiny.sd_legacy),
        torch_load("torch.load legacy sd", big.sd_legacy, tiny.sd_legacy),
        training=False,
    )
    case = f"3a. legacy `.pt` state dict, {mib(big.sd_legacy)}, {n_sd} tensors"
    rows.append(Row.ratio_row(case, "full `torch.load(weights_only=True)`", base, m, 100, key="3a"))
    m, base = compare(
        ckptlab_meta("read_meta legacy train", big.train_legacy, tiny.train_legacy),
        torch_load("torch.load legacy train", big.train_legacy, tiny.train_legacy),
        training=True,
    )
    case = f"3b. legacy `.pt` training ckpt, {mib(big.train_legacy)}, {n_sd} + {n_opt} optimizer tensors"
    rows.append(Row.ratio_row(case, "full `torch.load(weights_only=True)`", base, m, 100, key="3b"))

    # 4. the CLI on small files, and no torch on the metadata path
    for path, what in ((tiny.train_pt, "`.pt` zip training ckpt"), (tiny.safetensors, "safetensors")):
        m = cli_inspect(f"cli {what}", path, cli_repeats)
        size = fmt_bytes(path.stat().st_size)
        rows.append(
            Row.max_seconds_row(f"4. `ckptlab inspect --json` subprocess, small {what} ({size})", m, 0.5)
        )
    checked = (big.safetensors, big.train_pt, big.sd_legacy, big.train_legacy)
    checks = {p.name: torch_imported_after_read_meta(p) for p in checked}
    checks["ckptlab inspect --json (-X importtime)"] = cli_imports_torch(tiny.train_pt)
    rows.append(
        Row(
            "4. `'torch' in sys.modules` after `read_meta` (files 1, 2, 3a, 3b) / after the CLI",
            "—",
            None,
            None,
            "False",
            passed=not any(checks.values()),
            ckptlab_value=" / ".join(str(v) for v in checks.values()),
        )
    )
    startup = python_startup(cli_repeats)

    cpu = [f"{r.key} {fmt_ratio(r.cpu_ratio)}" for r in rows if r.cpu_ratio is not None]
    notes = [
        f"Medians of {repeats} repeats per side ({cli_repeats} for the CLI), each repeat in a fresh Python "
        "process; torch / ckptlab imported and warmed up on a tiny file of the same format before the timer "
        "(import time not counted). Ratio = baseline median / ckptlab median.",
        "Page cache: dropping it needs root, so each file is read once before every repeat and BOTH sides "
        "are measured warm (cold, the full loads would also pay for reading every byte; ckptlab reads "
        "headers).",
        "Peak RSS: `+X` is what the timed call added over the warmed interpreter (VmHWM reset after the "
        "warm-up), `peak` the process's absolute high-water mark; CLI rows: the whole CLI process's VmHWM.",
        "ckptlab in-process steady state (median of repeated calls on the same file in one process): "
        + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in steady.items())
        + ".",
        "The same ratios on process CPU time instead of wall time: " + ", ".join(cpu) + ".",
        f"CLI: `{' '.join(ckptlab_command())}`; bare `python -c pass` startup is {fmt_seconds(startup)}.",
    ]
    return report(
        "inspect",
        "quick" if args.quick else "full",
        info,
        rows,
        notes,
        repeats=repeats,
        json_path=args.json,
        json_extra={
            "files": big.info,
            "torch_imported": checks,
            "ckptlab_steady_state_s": steady,
            "python_startup_s": startup,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
