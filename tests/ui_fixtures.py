"""Small checkpoint files for the dashboard tests, built on the fly (no binaries in git).

`build_ui_root(root)` writes a folder the home page indexes: a safetensors file, a torch zip `.pt`, a torch
zip whose `data.pkl` references `posix.system` (unsafe, but readable), a plain pickle that is not a
checkpoint (unreadable: an error row), an interrupted save (`*.pt.tmp`: debris) and a sharded safetensors
set missing a shard (incomplete). Every file is dated an hour back, so no scan sees a save in progress.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# A hand-written protocol-2 pickle: `posix.system("id")`. Never unpickled by anything here.
EVIL_PICKLE = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
# {"x": posix.system("id")}: the same call as a dict value, for a torch zip's data.pkl
EVIL_DATA_PKL = (
    b"\x80\x02}q\x00(X\x01\x00\x00\x00xcposix\nsystem\nq\x01X\x02\x00\x00\x00idq\x02\x85q\x03Rq\x04u."
)

# safetensors model: 2 modules deep, mixed dtypes. params: 8*8 + 8 + 4*8 + 4 = 108
ST_TENSORS = {
    "encoder.layer.0.attn.q.weight": ((8, 8), np.float32),
    "encoder.layer.0.attn.q.bias": ((8,), np.float32),
    "head.weight": ((4, 8), np.float16),
    "head.bias": ((4,), np.float16),
}
ST_PARAMS = 108

# torch model: params 3*5 + 5 = 20; the weight is a ramp so its stats are exact
PT_PARAMS = 20


def write_safetensors(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal(shape).astype(dt) for k, (shape, dt) in ST_TENSORS.items()}
    save_file(arrays, str(path), metadata={"format": "pt", "note": "ckptlab ui fixture"})
    return path


def write_torch_pt(path: Path) -> Path:
    """torch.save of {'fc.weight': arange(15) as 5x3, 'fc.bias': zeros(5)}: min 0, max 14, mean 7."""
    import torch

    sd = {"fc.weight": torch.arange(15, dtype=torch.float32).reshape(5, 3), "fc.bias": torch.zeros(5)}
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 120}, path)
    return path


def write_unsafe_pt(path: Path) -> Path:
    """A torch zip archive (as torch.save writes it) whose data.pkl calls posix.system."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("evil/data.pkl", EVIL_DATA_PKL)
        z.writestr("evil/byteorder", "little")
        z.writestr("evil/version", "3\n")
    path.write_bytes(buf.getvalue())
    return path


def write_plain_pickle(path: Path) -> Path:
    path.write_bytes(EVIL_PICKLE)
    return path


def write_incomplete_sharded(folder: Path) -> Path:
    """`model.safetensors.index.json` naming two shards, of which only the first exists."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    write_safetensors(folder / shards[0])
    weight_map = {name: shards[i % 2] for i, name in enumerate(sorted(ST_TENSORS))}
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def backdate(root: Path, seconds: float = 3600.0) -> None:
    """Set every file's mtime `seconds` back: a scan treats files modified in the last few seconds as saves
    still being written (debris). Symlinks are left alone (a dangling one has no target to date)."""
    then = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.utime(p, (then, then))


# (run label, checkpoint, status) of build_ui_root's tree as the index lists it: by run, then step
INDEX_ROWS = [
    ("root", "broken.pt", "unreadable"),
    ("root", "evil.pt", "ok"),
    ("root", "model.safetensors", "ok"),
    ("run", "last.pt", "ok"),
    ("run", "step_200.pt.tmp", "debris"),
    ("sharded", "model.safetensors.index.json", "incomplete"),
]


def build_ui_root(root: Path) -> dict[str, Path]:
    """Every fixture under `root` (created; name it `root` for INDEX_ROWS' labels), by role."""
    (root / "run").mkdir(parents=True, exist_ok=True)
    files = {
        "safetensors": write_safetensors(root / "model.safetensors"),
        "torch": write_torch_pt(root / "run" / "last.pt"),
        "unsafe": write_unsafe_pt(root / "evil.pt"),
        "pickle": write_plain_pickle(root / "broken.pt"),
        "debris": write_torch_pt(root / "run" / "step_200.pt.tmp"),
        "incomplete": write_incomplete_sharded(root / "sharded"),
    }
    backdate(root)
    return files


PROJECT = Path(__file__).resolve().parent.parent


@contextmanager
def streamlit_server(env: Mapping[str, str], log_path: Path, timeout: float = 45.0) -> Iterator[str]:
    """`streamlit run app.py` on a free local port, with `env` over this process's environment; yields its URL
    once the health endpoint answers, and stops the server after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    cmd += [
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        full_env = {**os.environ, **env}
        proc = subprocess.Popen(cmd, cwd=PROJECT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, proc, timeout)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not become healthy at {url} in {timeout:.0f}s")
