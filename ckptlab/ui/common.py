"""Streamlit widgets and helpers both pages use: error display, safety badge, device selector, style."""

from __future__ import annotations

import logging
import re
import sys

import streamlit as st

from ..errors import CkptlabError
from ..formats.keras_reader import LAMBDA_FN_GLOBAL, LAMBDA_GLOBAL
from ..model import Safety

log = logging.getLogger(__name__)

ROOT_ENV = "CKPTLAB_ROOT"  # one or more roots, separated by os.pathsep
PATH_KEY = "path"  # the Inspect page's path box; bound to the `?path=` query parameter
TABLE_KEY = "checkpoints"  # the home page's index table (its selection opens Inspect)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def md_escape(text: str) -> str:
    """Text shown literally inside Streamlit markdown (paths and globals are full of `_`, `.` and `:`)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def error_line(exc: BaseException) -> str:
    """One line for the user: `PATH: cause` for ckptlab errors, `Type: message` for anything else."""
    if isinstance(exc, CkptlabError):
        return first_line(str(exc))
    return f"{type(exc).__name__}: {first_line(str(exc))}"


def show_error(exc: BaseException) -> None:
    """One `st.error` line, never a traceback."""
    st.error(md_escape(error_line(exc)), icon=":material/error:")


_PAGE_CSS = """
<style>
/* metric values at a size where 'safetensors-sharded' or '-0.01234' fit a card in a 6-8 column row */
[data-testid="stMetricValue"] { font-size: 1.6rem; }
</style>
"""


def page_style() -> None:
    """The few style tweaks every ckptlab page shares."""
    st.html(_PAGE_CSS)


def safety_badge(safety: Safety, fmt: str | None = None) -> None:
    """Green when nothing outside the allowlist was seen; red listing the unsafe globals, the parts that
    could not be checked, and the findings. `fmt`: the checkpoint's format, which decides the advice."""
    if safety.safe:
        st.success(
            "**Safe** — nothing outside the allowlist (checked statically; nothing was imported or run)",
            icon=":material/verified_user:",
        )
        return
    lines = [unsafe_headline(safety, fmt)]
    lines += [f"- {md_escape(f)}" for f in safety.grouped_findings()]
    st.error("\n".join(lines), icon=":material/gpp_bad:")


# a Keras / HDF5 file's unsafe parts are run by Keras or read by h5py, not by torch
_LAMBDAS = (LAMBDA_GLOBAL, LAMBDA_FN_GLOBAL)
_HDF5_LINKS = ("h5py.ExternalLink", "h5py.ExternalStorage", "h5py.VirtualDataset")


def unsafe_headline(safety: Safety, fmt: str | None = None) -> str:
    """The red badge's first line: what is unsafe, and how not to load the file. In a checkpoint folder the
    findings name their part (`training_args.bin: pickle references ...`): when one part holds them all,
    the line names it, and for HF Trainer's pickled arguments says that a resume does not load that file.
    A Keras or HDF5 file (`fmt` "keras" / "hdf5") is loaded by Keras or h5py, not torch: the advice says so.

    >>> line = unsafe_headline(Safety(("os.system",), ("training_args.bin: pickle references os.system",)))
    >>> line.split(" — ")[1].split(" (")[0]
    'never load `training_args.bin` with `torch.load(weights_only=False)`'
    >>> unsafe_headline(Safety(("keras.layers.Lambda",), ("Lambda layer 'f' in config.json",)), "keras")
    '**Unsafe:** `keras.layers.Lambda` — load this file with `keras.models.load_model` only if you trust \
it: Keras 2, and Keras 3 with `safe_mode=False`, run its Lambda code'
    """
    # names come from the file: in a code span only a backtick (or a blank line) would end it, and escapes
    # would show, so those are replaced
    names = safety.headline(quote=lambda g: f"`{_in_code(g)}`")
    # a part is named in front of its findings (`training_args.bin: ...`); part names hold no space, which
    # keeps a global's own ': ' (`pickle references a: b`) from passing for one
    parts = {f.split(": ", 1)[0] if ": " in f else None for f in safety.findings}
    part = next(iter(parts)) if len(parts) == 1 else None
    whole = part is not None and " " not in part
    subject = f"`{_in_code(part)}`" if whole else "this file"
    if fmt in ("keras", "hdf5"):
        if any(g in _LAMBDAS for g in safety.unsafe_globals):
            return (
                f"**Unsafe:** {names} — load {subject} with `keras.models.load_model` only if you trust it: "
                "Keras 2, and Keras 3 with `safe_mode=False`, run its Lambda code"
            )
        if all(g in _HDF5_LINKS for g in safety.unsafe_globals):
            return f"**Unsafe:** {names} — opening {subject} with h5py or Keras reads data from other files"
        return (
            f"**Unsafe:** {names} — `keras.models.load_model` needs the code {subject} names: load it only "
            "with code you trust"
        )
    line = f"**Unsafe:** {names} — never load {subject} with `torch.load(weights_only=False)`"
    if whole and part == "training_args.bin":
        line += " (HF Trainer's pickled arguments: a resume does not load it)"
    return line


def _in_code(text: str) -> str:
    """`text` for a Markdown code span: no backtick to close it, no line break to end its paragraph."""
    return text.replace("`", "'").replace("\r", " ").replace("\n", " ")


def device_selector(key: str = "device") -> str:
    """A device selectbox: `auto`, `cpu`, `cuda` until torch is imported, then `auto`, `cpu` and, with CUDA,
    `cuda`, `cuda:0`...; 'cpu' when torch is unavailable.

    Rendering never imports torch (a page that only shows metadata must not pay for it): the CUDA devices
    are listed once something else (computing stats) has imported torch, and `cuda` stays among them so a
    choice made before does not vanish. `loading.resolve_device` checks the choice when values are loaded."""
    if "torch" not in sys.modules:
        options = ["auto", "cpu", "cuda"]
    else:
        try:
            from ..loading import available_devices

            options = available_devices()
        except (CkptlabError, ImportError) as e:
            st.caption(md_escape(error_line(e)))
            return "cpu"
    return st.selectbox(
        "Device",
        options,
        index=0,
        key=key,
        help="Where tensor values are loaded and reduced. auto = the first CUDA GPU if any, else CPU.",
    )
