"""The index rows a scan builds: an entry from a checkpoint's name alone or from its meta, and the inspect
document the index stores for it."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from ..layouts import parse_name, run_dir_of_parent, stage
from ..model import CheckpointMeta, IndexEntry, jsonable, new_entry

if TYPE_CHECKING:
    from .plan import Found


def entry_of(
    f: Found, root: str, status: str = "ok", reason: str | None = None, meta: CheckpointMeta | None = None
) -> IndexEntry:
    """The index row of `f`: from its name alone, or from `meta` (content first, then the name, as
    `layouts.stage` puts it: a step saved in the file beats one parsed from its name)."""
    c = f.c
    run = c.run or run_dir_of_parent(os.path.dirname(c.path))
    size = sum(p[1] for p in f.files)
    if meta is None:
        name = parse_name(os.path.basename(c.path))
        return new_entry(
            {
                "path": c.path,
                "run": run,
                "root": root,
                "layout": c.layout,
                "status": status,
                "fingerprint": f.fingerprint,
                "files": f.files,
                "format": None,
                "framework": None,
                "step": name.step,
                "epoch": name.epoch,
                "size_bytes": size,
                "n_tensors": None,
                "n_params": None,
                "metrics": dict(name.metrics),
                "has_optimizer": None,
                "has_scheduler": None,
                "has_rng_state": None,
                "safe": None,
                "unsafe_globals": (),
                "reason": reason,
                "mtime": f.mtime,
                "meta": None,
                "link_to": c.link_to,
            }
        )
    doc, n_params = meta_document(meta)
    at = stage(c.path, meta.step, meta.epoch, meta.metrics)
    return new_entry(
        {
            "path": c.path,
            "run": run,
            "root": root,
            "layout": meta.layout if c.layout == "file" else c.layout,
            "status": "ok",
            "fingerprint": f.fingerprint,
            "files": f.files,
            "format": meta.format,
            "framework": meta.framework,
            "step": at.step,
            "epoch": at.epoch,
            "size_bytes": size,
            "n_tensors": len(meta.tensors),
            "n_params": n_params,
            "metrics": dict(at.metrics),
            "has_optimizer": meta.has_optimizer,
            "has_scheduler": meta.has_scheduler,
            "has_rng_state": meta.has_rng_state,
            "safe": meta.safety.safe,
            "unsafe_globals": meta.safety.unsafe_globals,
            "reason": "; ".join(meta.warnings) or None,
            "mtime": f.mtime,
            "meta": doc,
            "link_to": c.link_to,
        }
    )


def meta_document(meta: CheckpointMeta) -> tuple[dict[str, Any], int]:
    """(`meta.to_json()` without its `tensors` list, the parameter count): what the index stores as the
    inspect document. `to_json` walks the tensors four times (params, dtypes, tied, the list the index
    drops, a dict per tensor) and makes metadata JSON-safe through ABC checks; a scan builds thousands of
    these documents, so this is the same document built in one pass (tests compare it with `to_json`).

    >>> from ckptlab.model import TensorMeta
    >>> m = CheckpointMeta("m.pt", "torch-zip", 10, (TensorMeta("w", (2, 3), "float32", 24),))
    >>> doc, n = meta_document(m)
    >>> n, doc["dtypes"], doc == {k: v for k, v in m.to_json().items() if k != "tensors"}
    (6, {'float32': 6}, True)
    """
    n_params = 0
    dtypes: dict[str, int] = {}
    storages: dict[str, list[str]] = {}
    for t in meta.tensors:
        n = math.prod(t.shape)
        n_params += n
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + n
        if t.storage is not None:
            storages.setdefault(t.storage, []).append(t.name)
    safety = meta.safety
    doc = {
        "path": meta.path,
        "format": meta.format,
        "layout": meta.layout,
        "framework": meta.framework,
        "size_bytes": meta.size_bytes,
        "files": list(meta.files),
        "n_tensors": len(meta.tensors),
        "n_params": n_params,
        # CheckpointMeta.dtypes' order: largest first, then by name
        "dtypes": dict(sorted(dtypes.items(), key=lambda kv: (-kv[1], kv[0]))) if len(dtypes) > 1 else dtypes,
        "step": meta.step,
        "epoch": _plain(meta.epoch),
        "metrics": _plain(dict(meta.metrics)),
        "has_optimizer": meta.has_optimizer,
        "has_scheduler": meta.has_scheduler,
        "has_rng_state": meta.has_rng_state,
        "metadata": _plain(meta.metadata),
        "entries": [{"name": e.name, "kind": e.kind, "summary": e.summary} for e in meta.entries],
        "tied": {k: v for k, v in storages.items() if len(v) > 1},
        "n_other_tensors": len(meta.other_tensors),
        "safety": {
            "safe": safety.safe,
            "unsafe_globals": list(safety.unsafe_globals),
            "findings": list(safety.findings),
            "unverified": list(safety.unverified),
        },
        "warnings": list(meta.warnings),
    }
    return doc, n_params


def _plain(obj: Any) -> Any:
    """`model.jsonable` (metadata made JSON-safe), with the types metadata is made of tested by exact type
    first: ABC isinstance checks cost more than the rest of building a document."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is float:
        return obj if math.isfinite(obj) else str(obj)
    if t is dict:
        return {k if type(k) is str else str(k): _plain(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [_plain(v) for v in obj]
    return jsonable(obj)  # anything else (a Mapping proxy, a subclass, an odd value): the model's rules
