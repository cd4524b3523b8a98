"""Resource caps applied to untrusted input. One frozen object, passed in, so tests can tighten it."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # safetensors: the reference allows 100 MB headers; 16 MiB holds >100k tensor entries
    max_header_bytes: int = 16 * MiB
    max_tensors: int = 1_000_000
    # zip archives (torch, TorchScript, .keras)
    max_zip_entries: int = 1_000_000
    max_pickle_bytes: int = 64 * MiB  # data.pkl / legacy pickle streams
    max_keras_member_bytes: int = 64 * MiB  # inflated config.json / metadata.json of a .keras zip
    max_keras_weights_bytes: int = 64 * 1024 * MiB  # declared inflated size of model.weights.h5
    # the restricted pickle VM
    max_pickle_ops: int = 20_000_000
    max_pickle_depth: int = 1_000  # nested MARKs
    max_pickle_stack: int = 5_000_000
    max_pickle_memo: int = 5_000_000
    # pickles up to this size are walked by the C unpickler with inert stand-ins (fast); the size bounds
    # their opcodes, memo and nesting. 0 forces ckptlab's own interpreter, which counts each of those.
    max_fast_pickle_bytes: int = 4 * MiB
    # HDF5 worker
    max_hdf5_objects: int = 500_000
    hdf5_timeout_s: float = 60.0
    hdf5_memory_bytes: int = 2048 * MiB
    # sharded index.json
    max_index_json_bytes: int = 64 * MiB


DEFAULT_LIMITS = Limits()
