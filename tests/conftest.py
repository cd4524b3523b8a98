"""Fixtures that build real checkpoint files on the fly in tmp_path, in every torch-side format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def small_state_dict() -> dict[str, torch.Tensor]:
    """A deterministic state dict with what readers get wrong: tied weights, bf16, fp8, a strided view."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 4, generator=g)
    return {
        "embed.weight": emb,
        "encoder.0.weight": torch.randn(8, 4, generator=g),
        "encoder.0.bias": torch.randn(8, generator=g),
        "encoder.norm.weight": torch.ones(8, dtype=torch.bfloat16),
        "head.weight": emb,  # tied to embed.weight: same storage
        "head.scale": torch.tensor([0.5, 1.5], dtype=torch.float8_e4m3fn),
        "proj.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # non-contiguous view
        "steps": torch.tensor(7, dtype=torch.int64),
    }


EXPECTED = {  # name -> (shape, dtype)
    "embed.weight": ((10, 4), "float32"),
    "encoder.0.weight": ((8, 4), "float32"),
    "encoder.0.bias": ((8,), "float32"),
    "encoder.norm.weight": ((8,), "bfloat16"),
    "head.weight": ((10, 4), "float32"),
    "head.scale": ((2,), "float8_e4m3fn"),
    "proj.weight": ((3, 2), "float32"),
    "steps": ((), "int64"),
}
EXPECTED_PARAMS = 40 + 32 + 8 + 8 + 40 + 2 + 6 + 1


def training_checkpoint() -> dict:
    """The PyTorch-tutorial checkpoint dict: model + Adam + StepLR + loss + RNG."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return {
        "epoch": 3,
        "global_step": 300,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler_state_dict": sched.state_dict(),
        "loss": 0.25,
        "val_acc": 0.875,
        "rng_state": torch.get_rng_state(),
        "arch": "mlp",
    }


def lightning_checkpoint() -> dict:
    sd = {f"model.{k}": v for k, v in training_checkpoint()["model_state_dict"].items()}
    cb = (
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1}"
    )
    return {
        "epoch": 2,
        "global_step": 300,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 2}}}},
        "callbacks": {
            cb: {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.125),
                "best_model_path": "/runs/x/epoch=2-step=300.ckpt",
                "current_score": torch.tensor(0.125),
            }
        },
        "optimizer_states": [training_checkpoint()["optimizer_state_dict"]],
        "lr_schedulers": [training_checkpoint()["scheduler_state_dict"]],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.001, "hidden": 8},
    }


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    return small_state_dict()


@pytest.fixture
def zip_pt(tmp_path: Path) -> Path:
    p = tmp_path / "model.pt"
    torch.save(small_state_dict(), p)
    return p


@pytest.fixture
def legacy_pt(tmp_path: Path) -> Path:
    p = tmp_path / "legacy.pt"
    torch.save(small_state_dict(), p, _use_new_zipfile_serialization=False)
    return p


@pytest.fixture
def train_pt(tmp_path: Path) -> Path:
    p = tmp_path / "checkpoint_epoch_3.pth"
    torch.save(training_checkpoint(), p)
    return p


@pytest.fixture
def lightning_ckpt(tmp_path: Path) -> Path:
    p = tmp_path / "epoch=2-step=300.ckpt"
    torch.save(lightning_checkpoint(), p)
    return p


@pytest.fixture
def safetensors_file(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in small_state_dict().items() if k != "head.weight"}
    p = tmp_path / "model.safetensors"
    save_file(sd, str(p), metadata={"format": "pt", "step": "1200"})
    return p


@pytest.fixture
def torchscript_file(tmp_path: Path) -> Path:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("buf", torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.buf

    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Net()), str(p))
    return p


def write_sharded_safetensors(d: Path) -> Path:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in small_state_dict().items() if k != "head.weight"}
    names = list(sd)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    wm = {}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(d / fname), metadata={"format": "pt"})
        wm.update({k: fname for k in keys})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    idx = d / "model.safetensors.index.json"
    idx.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wm}))
    return idx


@pytest.fixture
def sharded_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sharded"
    d.mkdir()
    write_sharded_safetensors(d)
    return d


@pytest.fixture
def sharded_torch_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sharded-bin"
    d.mkdir()
    sd = small_state_dict()
    names = list(sd)
    wm = {}
    for i, keys in enumerate((names[:4], names[4:]), start=1):
        fname = f"pytorch_model-0000{i}-of-00002.bin"
        torch.save({k: sd[k] for k in keys}, d / fname)
        wm.update({k: fname for k in keys})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return d


def write_hf_checkpoint(d: Path, step: int = 500) -> Path:
    from safetensors.torch import save_file

    ck = training_checkpoint()
    d.mkdir(parents=True)
    save_file(ck["model_state_dict"], str(d / "model.safetensors"), metadata={"format": "pt"})
    torch.save(ck["optimizer_state_dict"], d / "optimizer.pt")
    torch.save(ck["scheduler_state_dict"], d / "scheduler.pt")
    torch.save({"cpu": torch.get_rng_state()}, d / "rng_state.pth")
    state = {
        "global_step": step,
        "epoch": 1.5,
        "best_metric": 0.42,
        "best_model_checkpoint": str(d),
        "log_history": [
            {"epoch": 0.5, "step": 100, "loss": 1.2, "learning_rate": 5e-5},
            {"epoch": 1.5, "step": step, "loss": 0.8, "learning_rate": 4e-5},
            {"epoch": 1.5, "step": step, "eval_loss": 0.9, "eval_accuracy": 0.7, "eval_runtime": 1.0},
        ],
        "max_steps": 1000,
    }
    (d / "trainer_state.json").write_text(json.dumps(state))
    (d / "config.json").write_text(json.dumps({"model_type": "mlp", "architectures": ["MLP"]}))
    return d


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    return write_hf_checkpoint(tmp_path / "out" / "checkpoint-500")


@pytest.fixture(scope="session")
def dcp_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny torch.distributed.checkpoint directory, shared read-only (copy it before damaging it)."""
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    d = tmp_path_factory.mktemp("dcp") / "ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"w": torch.zeros(2, 3)}, "step": 7}, checkpoint_id=str(d))
    return d


@pytest.fixture
def dcp_dir(tmp_path: Path) -> Path:
    import torch.distributed.checkpoint as dcp

    ck = training_checkpoint()
    d = tmp_path / "dcp" / "step_300"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": ck["model_state_dict"], "step": 300}, checkpoint_id=str(d))
    return d
