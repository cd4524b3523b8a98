"""Keras-specific reading that needs no HDF5 parser: the `.keras` zip, JSON configs, safety, layouts.

Everything here runs in the parent process. The HDF5 parts (`model.weights.h5`, Keras 2 `.h5` files) go
through the isolated worker in `hdf5_reader`; this module only interprets the facts it returns.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError, LimitError
from ..model import Entry
from .limits import Limits
from .zipsafe import file_size, open_zip

WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"

LAMBDA_GLOBAL = "keras.layers.Lambda"
# Keras 3 serialises a bare Python lambda (e.g. `activation=lambda x: ...`) as marshalled bytecode
LAMBDA_FN_GLOBAL = "keras.__lambda__"

# TF 2.11-2.12 registered its new optimizers under the default package, so their own training_config
# says 'Custom>Adam' for the built-in Adam; these are Keras classes, not user code
_TF211_OPTIMIZERS = frozenset(
    ("Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lion", "Nadam", "RMSprop", "SGD")
)
_KERAS3_VAR = re.compile(r"(^|/)vars/\d+$")


@dataclass(frozen=True)
class KerasArchive:
    """What the parent learns from a `.keras` zip before the weights go to the HDF5 worker."""

    config: Any  # parsed config.json, or None when absent
    metadata: Any  # parsed metadata.json, or None when absent
    weights_member: str
    warnings: tuple[str, ...] = ()


def open_keras_archive(path: Path, limits: Limits) -> KerasArchive:
    """Check a `.keras` zip's caps and read its two JSON members (the weights are left to the worker)."""
    p = str(path)
    with open(path, "rb") as f, open_zip(f, file_size(f), p, limits) as zf:
        names = set(zf.namelist())
        if WEIGHTS_MEMBER not in names:
            other = " (npz weights are not supported)" if "model.weights.npz" in names else ""
            raise FormatError(p, f"no {WEIGHTS_MEMBER} in .keras archive{other}")
        declared = zf.getinfo(WEIGHTS_MEMBER).file_size
        if declared > limits.max_keras_weights_bytes:
            raise LimitError(
                p,
                f"{WEIGHTS_MEMBER} declares {declared} bytes inflated "
                f"(limit {limits.max_keras_weights_bytes})",
            )
        warnings: list[str] = []
        docs = {}
        for member in (CONFIG_MEMBER, METADATA_MEMBER):
            if member not in names:
                warnings.append(f"no {member} in .keras archive")
                docs[member] = None
                continue
            docs[member] = _read_json_member(p, zf, member, limits.max_keras_member_bytes)
    return KerasArchive(docs[CONFIG_MEMBER], docs[METADATA_MEMBER], WEIGHTS_MEMBER, tuple(warnings))


def _read_json_member(p: str, zf: zipfile.ZipFile, member: str, cap: int) -> Any:
    info = zf.getinfo(member)
    if info.file_size > cap:
        raise LimitError(p, f"{member} declares {info.file_size} bytes inflated (limit {cap})")
    # zipsafe's SafeZipFile.read: inflation stops at the (checked) declared size, damage is one error line
    return parse_json(p, member, zf.read(info))


def parse_json(p: str, what: str, raw: str | bytes) -> Any:
    """JSON from the file, with one-line errors (invalid, or nested deep enough to exhaust the stack)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise FormatError(p, f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(p, f"{what} is not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------- safety


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def config_safety(config: Any, where: str) -> tuple[list[str], list[str]]:
    """(unsafe globals, findings) for a Keras model config: Lambda layers and non-Keras custom objects.

    Walks every dict and list, so layers nested in Functional/Sequential models or wrapped by
    TimeDistributed/Bidirectional are found wherever they sit. Iterative: configs can nest deeply.
    """
    unsafe: list[str] = []
    findings: list[str] = []
    # (node, inside a Lambda layer already reported); only dicts and lists are pushed: a config is mostly
    # scalar leaves, and skipping them before they are stacked halves the walk
    stack: list[tuple[Any, bool]] = [(config, False)] if isinstance(config, (dict, list)) else []
    while stack:
        node, in_lambda = stack.pop()
        if isinstance(node, list):
            stack.extend([(v, in_lambda) for v in reversed(node) if isinstance(v, (dict, list))])
            continue
        cls = node.get("class_name")
        inner = node.get("config")
        module = node.get("module")
        if cls == "Lambda" and (module is None or (isinstance(module, str) and _is_keras_module(module))):
            name = inner.get("name") if isinstance(inner, dict) else None
            _add(unsafe, LAMBDA_GLOBAL)
            findings.append(f"Lambda layer {name!r} in {where} (runs Python code when loaded)")
            in_lambda = True
        elif cls == "__lambda__" and not in_lambda:
            _add(unsafe, LAMBDA_FN_GLOBAL)
            findings.append(f"serialized Python lambda in {where} (bytecode run when loaded)")
        elif isinstance(cls, str):
            reg = node.get("registered_name")
            keras3 = "module" in node  # Keras 2 records no modules at all
            qual = _custom_object(module, cls, inner, reg) if keras3 else _registered_object(cls)
            if qual is not None:
                _add(unsafe, qual)
                what = f"custom function {inner!r}" if cls == "function" else f"custom object {qual}"
                if isinstance(reg, str) and reg not in (cls, "function", qual):
                    what += f" (registered as {reg!r})"
                elif keras3 and module is None and cls != "function":
                    what += " (no module recorded)"  # why it is not a dotted import path
                _add(findings, f"{what} in {where} (needs user code to load)")
        stack.extend([(v, in_lambda) for v in reversed(node.values()) if isinstance(v, (dict, list))])
    return unsafe, findings


def _custom_object(module: Any, cls: str, inner: Any, registered: Any) -> str | None:
    """The name of an object that needs user code to load, as the config records it; None for Keras
    built-ins. Nothing is inferred: `module.name` only where a module is recorded, else the registered name.

    Keras 3 writes `module: null` for a class defined in the saving script (it drops `__main__`); the
    loader finds such a class by `registered_name` alone ('package>Name', or the bare class name when
    it was not registered). A function is written with module `builtins`, the module of the function
    *type*, not of the function: its registered name is the config string.
    """
    if cls == "function":
        if not isinstance(inner, str):
            return None
        if module is None or module == "builtins":
            return inner
        name = inner
    elif module is None:
        return registered if isinstance(registered, str) and registered else cls
    else:
        name = cls
    if not isinstance(module, str) or _is_keras_module(module) or cls.startswith("__"):
        return None
    return f"{module}.{name}"


def _registered_object(cls: str) -> str | None:
    """Keras 2 configs name a registered custom class 'package>Name', with no module: reported as is (the
    package is a registration key, not something importable)."""
    if cls.startswith("__") or ">" not in cls:
        return None
    package, _, name = cls.partition(">")
    if package == "Custom" and name in _TF211_OPTIMIZERS:
        return None
    return cls


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


# ---------------------------------------------------------------------------------------------- docs


@dataclass
class KerasDocs:
    """What a model's JSON documents add to its metadata: summaries, entries and safety findings."""

    metadata: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def add_model(self, config: Any, where: str) -> None:
        cls, n_layers = model_summary(config)
        if cls is not None:
            self.metadata["model_class"] = cls
        if n_layers is not None:
            self.metadata["n_layers"] = n_layers
        self.entries.append(Entry("model_config", "dict", describe_model(config)))
        self.add_safety(config, where)

    def add_training(self, training: Any, name: str) -> None:
        summary = training_summary(training)
        self.metadata.update(summary)
        self.entries.append(Entry(name, "dict", describe_training(summary)))

    def add_safety(self, config: Any, where: str) -> None:
        unsafe, findings = config_safety(config, where)
        for g in unsafe:
            _add(self.unsafe, g)
        for f in findings:
            _add(self.findings, f)


def keras2_docs(p: str, root_attrs: dict[str, Any], weights_attrs: dict[str, Any]) -> KerasDocs:
    """A tf.keras 2 `.h5`: versions from the root (or `model_weights`) attributes, JSON config attributes."""
    docs = KerasDocs()
    for key in ("keras_version", "backend"):
        value = root_attrs.get(key, weights_attrs.get(key))
        if isinstance(value, str):
            docs.metadata[key] = value
    model_config = root_attrs.get("model_config")
    if isinstance(model_config, str):
        docs.add_model(parse_json(p, "model_config attribute", model_config), "model_config")
    training = root_attrs.get("training_config")
    if isinstance(training, str):
        parsed = parse_json(p, "training_config attribute", training)
        docs.add_training(parsed, "training_config")
        docs.add_safety(parsed, "training_config")  # custom losses and metrics need user code too
    return docs


def keras3_docs(archive: KerasArchive) -> KerasDocs:
    """A `.keras`: keras_version / date_saved from metadata.json, model and compile from config.json."""
    docs = KerasDocs()
    if isinstance(archive.metadata, dict):
        for key in ("keras_version", "date_saved"):
            if isinstance(archive.metadata.get(key), str):
                docs.metadata[key] = archive.metadata[key]
    config = archive.config
    if config is not None:
        docs.add_model(config, CONFIG_MEMBER)  # the whole file: compile_config included
        compile_config = config.get("compile_config") if isinstance(config, dict) else None
        if isinstance(compile_config, dict):
            docs.add_training(compile_config, "compile_config")
    return docs


# ------------------------------------------------------------------------------------------ summaries


def _name_of(obj: Any) -> str | None:
    """'adam' / {'class_name': 'Adam', ...} -> 'Adam'; lists -> 'a, b'."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        if cls == "function" and isinstance(obj.get("config"), str):
            return obj["config"]
        return cls if isinstance(cls, str) else None
    if isinstance(obj, (list, tuple)):
        names = [n for n in (_name_of(v) for v in obj) if n]
        return ", ".join(names) if names else None
    return None


def model_summary(config: Any) -> tuple[str | None, int | None]:
    """(model class name, number of entries in its `layers` list) of a model config."""
    if not isinstance(config, dict):
        return None, None
    cls = config.get("class_name") if isinstance(config.get("class_name"), str) else None
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return cls, len(layers) if isinstance(layers, list) else None


def training_summary(training: Any) -> dict[str, Any]:
    """loss / optimizer / metrics of a Keras 2 training_config or a Keras 3 compile_config."""
    if not isinstance(training, dict):
        return {}
    out: dict[str, Any] = {}
    opt = _name_of(training.get("optimizer_config", training.get("optimizer")))
    if opt:
        out["optimizer"] = opt.rpartition(">")[2]  # TF 2.11's 'Custom>Adam' is the built-in Adam
    loss = training.get("loss")
    if isinstance(loss, dict) and "class_name" not in loss:  # {output_name: loss}
        loss = ", ".join(f"{k}: {_name_of(v)}" for k, v in loss.items())
    if _name_of(loss):
        out["loss"] = _name_of(loss)
    metrics = [n for n in (_metric_name(m) for m in _flatten(training.get("metrics"))) if n]
    if metrics:
        out["metrics"] = metrics
    return out


def _flatten(value: Any) -> list[Any]:
    """Keras 2 nests metrics per output ([[...]]) or by output name ({out: [...]}); flatten both."""
    if isinstance(value, dict) and "class_name" not in value:
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _flatten(v)]
    return [] if value is None else [value]


def _metric_name(metric: Any) -> str | None:
    """'mae', or a metric object's configured name ('mae' for MeanMetricWrapper(name='mae'))."""
    if isinstance(metric, dict) and isinstance(metric.get("config"), dict):
        name = metric["config"].get("name")
        if isinstance(name, str):
            return name
    return _name_of(metric)


def describe_model(config: Any) -> str:
    cls, n_layers = model_summary(config)
    parts = [cls or "unknown model"]
    if n_layers is not None:
        parts.append(f"{n_layers} layers")
    return ", ".join(parts)


def describe_training(summary: dict[str, Any]) -> str:
    parts = []
    if "optimizer" in summary:
        parts.append(f"optimizer {summary['optimizer']}")
    if "loss" in summary:
        parts.append(f"loss {summary['loss']}")
    if summary.get("metrics"):
        parts.append(f"metrics {', '.join(summary['metrics'])}")
    return ", ".join(parts) or "empty"


# -------------------------------------------------------------------------------------------- layouts


def natural_key(path: str) -> list[Any]:
    """'layers/dense/vars/10' sorts after 'layers/dense/vars/2' (HDF5 lists names alphabetically)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", path)]


def is_keras3_weights(datasets: list[str], root_attrs: dict[str, Any]) -> bool:
    """A Keras 3 weights file: `.../vars/<i>` datasets and no Keras 2 `layer_names` attribute."""
    if "layer_names" in root_attrs or "model_config" in root_attrs:
        return False
    return any(_KERAS3_VAR.search(d) for d in datasets)


def keras2_weight_paths(
    root: str, groups: dict[str, dict[str, Any]], warnings: list[str]
) -> list[tuple[str, str]]:
    """(tensor name, dataset path) in `layer_names` order for a Keras 2 weights group.

    `root` is 'model_weights' for a full model or '' for save_weights files; `groups` maps group path to
    its attributes. Tensor names are the `weight_names` entries ('dense/kernel:0'); when two layers list
    the same weight name (nested models reusing layer names), the later one is prefixed with its layer.
    """
    root_attrs = groups.get(root, {})
    layer_names = attr_list(root_attrs, "layer_names")
    if "top_level_model_weights" not in layer_names and _join(root, "top_level_model_weights") in groups:
        layer_names.append("top_level_model_weights")  # Keras >= 2.13 keeps model-level weights here
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for layer in layer_names:
        gpath = _join(root, layer)
        if gpath not in groups:
            warnings.append(f"layer {layer!r} listed in layer_names has no group")
            continue
        for wname in attr_list(groups[gpath], "weight_names"):
            name = wname if wname not in seen else f"{layer}/{wname}"
            seen.add(name)
            out.append((name, _join(gpath, wname)))
    return out


def attr_list(attrs: dict[str, Any], name: str) -> list[str]:
    """A Keras 2 name-list attribute; lists over HDF5's 64 KiB header limit are split as name0, name1, ..."""
    if name in attrs:
        return _str_list(attrs[name])
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out += _str_list(attrs[f"{name}{i}"])
        i += 1
    return out


def _join(root: str, name: str) -> str:
    return f"{root}/{name}" if root else name


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
