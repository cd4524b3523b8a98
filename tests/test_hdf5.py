"""HDF5 / Keras readers: exact metadata for each real layout, safety findings, worker isolation, errors.

Each worker spawn costs ~0.2 s, so the well-formed files are read once, as one batch, by a module fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5_fixtures import (
    CORRUPT_HDF5,
    KERAS2_MODEL_WEIGHTS,
    KERAS2_OPTIMIZER_WEIGHTS,
    KERAS3_WEIGHTS,
    N_KERAS3_OPTIMIZER_VARS,
    dense,
    keras3_config,
    nested_lambda_config,
    use_flaky_worker,
    values,
    write_dot_keras,
    write_generic,
    write_keras2_model,
    write_keras2_weights,
    write_keras3_weights,
)

from ckptlab.errors import FormatError, LimitError
from ckptlab.formats import hdf5_reader as hr
from ckptlab.formats import keras_reader as kr
from ckptlab.formats.hdf5_client import pool
from ckptlab.formats.limits import DEFAULT_LIMITS, Limits
from ckptlab.model import CheckpointMeta, Entry, Hdf5Location, RawLocation

LAMBDA = "(runs Python code when loaded)"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("h5")
    paths = {
        "keras2": d / "model.h5",
        "keras2_weights": d / "weights.h5",
        "keras3": d / "model.weights.h5",
        "dot_keras": d / "model.keras",
        "dot_keras_deflated": d / "deflated.keras",
        "generic": d / "generic.h5",
        "userblock": d / "userblock.h5",
        "lambda": d / "lambda.h5",
        "links": d / "links.h5",
    }
    write_keras2_model(paths["keras2"])
    write_keras2_weights(paths["keras2_weights"])
    write_keras3_weights(paths["keras3"])
    write_dot_keras(paths["dot_keras"])
    write_dot_keras(paths["dot_keras_deflated"], compress=zipfile.ZIP_DEFLATED)
    write_generic(paths["generic"])
    write_generic(paths["userblock"], userblock=1024)
    write_keras2_model(paths["lambda"], model_config=nested_lambda_config(), optimizer=False)
    with h5py.File(d / "other.h5", "w") as f:
        f["x"] = np.zeros(3, "f4")  # a link target that must not show up as a tensor
    with h5py.File(paths["links"], "w") as f:
        f["real"] = values((2,))
        f.create_group("a")["b"] = h5py.ExternalLink("other.h5", "/x")
        layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
        layout[:] = h5py.VirtualSource("src.h5", "data", shape=(4,))
        f.create_virtual_dataset("vds", layout)
        f.create_dataset("ext_raw", shape=(4,), dtype="f4", external=[("raw.bin", 0, 16)])
    return paths


@pytest.fixture(scope="module")
def metas(files: dict[str, Path]) -> dict[str, CheckpointMeta]:
    keys = list(files)
    results = hr.read_hdf5_many([files[k] for k in keys], DEFAULT_LIMITS)
    out = {}
    for key, result in zip(keys, results, strict=True):
        assert isinstance(result, CheckpointMeta), f"{key}: {result}"
        out[key] = result
    return out


def _summary(meta: CheckpointMeta, other: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
    return [(t.name, t.shape, t.dtype) for t in (meta.other_tensors if other else meta.tensors)]


# ------------------------------------------------------------------------------------------- layouts


def test_keras2_full_model(metas: dict[str, CheckpointMeta], files: dict[str, Path]) -> None:
    m = metas["keras2"]
    assert (m.format, m.framework, m.layout) == ("hdf5", "keras", "file")
    assert m.files == (str(files["keras2"]),)
    assert m.size_bytes == files["keras2"].stat().st_size
    assert _summary(m) == [(name, shape, "float32") for name, shape in KERAS2_MODEL_WEIGHTS.items()]
    assert m.n_params == 12 + 3 + 6 + 2
    assert m.has_optimizer
    expected_opt = [
        (f"optimizer_weights/{n}", s, "int64" if d == "i8" else "float32")
        for n, (s, d) in KERAS2_OPTIMIZER_WEIGHTS.items()
    ]
    assert _summary(m, other=True) == expected_opt  # weight_names order, not HDF5's alphabetical one
    assert dict(m.metadata) == {
        "hdf5_layout": "keras2-model",
        "keras_version": "2.15.0",
        "backend": "tensorflow",
        "model_class": "Sequential",
        "n_layers": 3,
        "optimizer": "Adam",
        "loss": "mse",
        "metrics": ["mae"],
    }
    assert m.entries == (
        Entry("model_config", "dict", "Sequential, 3 layers"),
        Entry("training_config", "dict", "optimizer Adam, loss mse, metrics mae"),
        Entry("optimizer_weights", "optimizer", "Adam, 5 tensors"),
    )
    assert m.safety.safe and m.safety.findings == ()  # 'Custom>Adam' is TF 2.11's name for Keras's Adam
    assert (m.step, m.epoch, dict(m.metrics), m.warnings) == (None, None, {}, ())
    doc = json.loads(json.dumps(m.to_json()))
    assert doc["n_tensors"] == 4 and doc["n_other_tensors"] == 5 and doc["dtypes"] == {"float32": 23}


def test_keras2_weights_only(metas: dict[str, CheckpointMeta]) -> None:
    m = metas["keras2_weights"]
    assert m.framework == "keras"
    assert [t.name for t in m.tensors] == list(KERAS2_MODEL_WEIGHTS)
    assert not m.has_optimizer and m.other_tensors == ()
    assert dict(m.metadata) == {
        "hdf5_layout": "keras2-weights",
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }
    assert m.entries == ()


def test_keras3_weights(metas: dict[str, CheckpointMeta]) -> None:
    m = metas["keras3"]
    assert (m.format, m.framework) == ("hdf5", "keras")
    assert _summary(m) == [(name, shape, "float32") for name, shape in KERAS3_WEIGHTS.items()]
    # natural order: vars/10 after vars/9, though HDF5 lists it after vars/1
    assert [t.name for t in m.other_tensors] == [
        f"optimizer/vars/{i}" for i in range(N_KERAS3_OPTIMIZER_VARS)
    ]
    assert m.other_tensors[0].dtype == "int32" and m.other_tensors[0].shape == ()
    assert m.has_optimizer
    assert m.entries == (Entry("optimizer", "optimizer", "adam, 12 tensors"),)
    assert dict(m.metadata) == {"hdf5_layout": "keras3-weights"}
    assert all(isinstance(t.loc, RawLocation) for t in m.tensors)


@pytest.mark.parametrize("key", ["dot_keras", "dot_keras_deflated"])
def test_dot_keras(metas: dict[str, CheckpointMeta], files: dict[str, Path], key: str) -> None:
    m = metas[key]
    assert (m.format, m.framework, m.files) == ("keras", "keras", (str(files[key]),))
    assert _summary(m) == [(name, shape, "float32") for name, shape in KERAS3_WEIGHTS.items()]
    assert len(m.other_tensors) == N_KERAS3_OPTIMIZER_VARS and m.has_optimizer
    assert dict(m.metadata) == {
        "hdf5_layout": "keras3-weights",
        "keras_version": "3.5.0",
        "date_saved": "2024-09-01@12:00:00",
        "model_class": "Sequential",
        "n_layers": 2,
        "optimizer": "Adam",
        "loss": "mse",
        "metrics": ["mae"],
    }
    assert m.entries == (
        Entry("model_config", "dict", "Sequential, 2 layers"),
        Entry("compile_config", "dict", "optimizer Adam, loss mse, metrics mae"),
        Entry("optimizer", "optimizer", "Adam, 12 tensors"),
    )
    assert m.safety.safe
    assert m.tensors[0].loc == Hdf5Location(str(files[key]), "/layers/dense/vars/0", "model.weights.h5")


def test_generic_hdf5(metas: dict[str, CheckpointMeta]) -> None:
    m = metas["generic"]
    assert (m.format, m.framework) == ("hdf5", None)
    assert _summary(m) == [
        ("count", (), "int64"),
        ("decoder/big", (50, 20), "float32"),
        ("encoder/layer0/bias", (4,), "float64"),
        ("encoder/layer0/weight", (3, 4), "float32"),
        ("encoder/layer2/weight", (2, 3), "int32"),
        ("encoder/layer10/weight", (2, 2), "float16"),
        ("mask", (3,), "bool"),
        ("tied", (3, 4), "float32"),
    ]
    assert m.tensor("encoder/layer0/bias").nbytes == 32 and m.tensor("mask").nbytes == 3
    assert list(m.tied.values()) == [("encoder/layer0/weight", "tied")]  # one dataset, two hard links
    assert m.entries == (
        Entry("alias", "link", "soft link -> /encoder/layer0/bias"),
        Entry("meta/names", "dataset", "string dataset, shape (3,)"),
        Entry("meta/table", "dataset", "compound dataset, shape (2,)"),
    )
    assert (m.step, m.epoch, dict(m.metrics)) == (1200, 3, {"val_loss": 0.25})
    assert dict(m.metadata) == {"hdf5_layout": "generic"} and m.safety.safe and not m.has_optimizer
    assert isinstance(m.tensor("decoder/big").loc, Hdf5Location)  # chunked + gzip: the worker reads it
    assert m.tensor("encoder/layer2/weight").loc.byteorder == "big"


@pytest.mark.parametrize("key", ["generic", "userblock", "keras2", "keras3"])
def test_raw_locations_read_with_plain_open(
    metas: dict[str, CheckpointMeta], files: dict[str, Path], key: str
) -> None:
    """RawLocation offsets are absolute (user block included): a plain seek+read gives the values."""
    expected = {}
    with h5py.File(files[key]) as f:
        for t in metas[key].tensors + metas[key].other_tensors:
            if isinstance(t.loc, RawLocation):
                expected[t.name] = (t.loc, f[_dataset_path(f, t.name)][()])
    assert len(expected) >= 4
    with open(files[key], "rb") as raw:
        for name, (loc, want) in expected.items():
            raw.seek(loc.offset)
            buf = raw.read(want.nbytes)
            got = np.frombuffer(buf, dtype=want.dtype).reshape(want.shape)
            assert loc.storage_numel == want.size and np.array_equal(got, want), name


def _dataset_path(f: h5py.File, name: str) -> str:
    """Tensor name -> dataset path (Keras 2 weight names sit under model_weights/<layer>/)."""
    if name in f:
        return name
    return f"model_weights/{name.split('/')[0]}/{name}"


# --------------------------------------------------------------------------------------------- safety


def test_lambda_nested_in_functional_sequential_timedistributed_bidirectional(
    metas: dict[str, CheckpointMeta],
) -> None:
    m = metas["lambda"]
    assert m.safety.unsafe_globals == ("keras.layers.Lambda",)
    assert m.safety.findings == (
        f"Lambda layer 'scale_by_2' in model_config {LAMBDA}",
        f"Lambda layer 'backward_hack' in model_config {LAMBDA}",
    )
    assert not m.safety.safe
    assert len(m.tensors) == 4 and m.metadata["model_class"] == "Functional"  # an unsafe file still reads


def test_links_virtual_and_external_storage_are_reported_not_followed(
    metas: dict[str, CheckpointMeta],
) -> None:
    m = metas["links"]
    # breadth-first walk order: root datasets, then what sits in group /a
    assert m.safety.unsafe_globals == ("h5py.ExternalStorage", "h5py.VirtualDataset", "h5py.ExternalLink")
    assert m.safety.findings == (
        "external storage /ext_raw -> raw.bin",
        "virtual dataset /vds -> src.h5:data",
        "external link /a/b -> other.h5:/x",
    )
    assert [t.name for t in m.tensors] == ["ext_raw", "real", "vds"]  # other.h5:/x is not listed
    # their bytes live in files the checkpoint names: no location, so nothing ever reads them
    assert m.tensor("vds").loc is None and m.tensor("ext_raw").loc is None


def test_keras3_custom_objects_and_lambdas(tmp_path: Path) -> None:
    layers = [
        dense("dense", 3, build_config={"input_shape": [None, 4]}),
        {
            "module": "my_project.layers",
            "class_name": "Scale",
            "config": {},
            "registered_name": "my_project>Scale",
        },
        {"module": None, "class_name": "Local", "config": {}, "registered_name": "Local"},
        dense("act", 2)
        | {
            "config": {
                "name": "act",
                "activation": {
                    "module": "builtins",
                    "class_name": "function",
                    "config": "my_act",
                    "registered_name": "function",
                },
            }
        },
        {
            "module": "keras.layers",
            "class_name": "Lambda",
            "config": {
                "name": "lam",
                "function": {"class_name": "__lambda__", "config": {"value": "4wEAAA"}},
            },
            "registered_name": None,
        },
        dense("gelu", 2)
        | {
            "config": {
                "name": "gelu",
                "activation": {"class_name": "__lambda__", "config": {"value": "4wEAAA"}},
            }
        },
        {"module": "keras.src.layers.core.dense", "class_name": "Dense", "config": {"name": "d2"}},
    ]
    path = tmp_path / "custom.keras"
    write_dot_keras(path, config=keras3_config(layers))
    m = hr.read_keras(path, DEFAULT_LIMITS)
    # names as the file records them: `module: null` and `module: builtins` (a function's type) name nothing
    assert m.safety.unsafe_globals == (
        "my_project.layers.Scale",
        "Local",
        "my_act",
        "keras.layers.Lambda",
        "keras.__lambda__",
    )
    assert m.safety.findings == (
        "custom object my_project.layers.Scale (registered as 'my_project>Scale') in config.json "
        "(needs user code to load)",
        "custom object Local (no module recorded) in config.json (needs user code to load)",
        "custom function 'my_act' in config.json (needs user code to load)",
        f"Lambda layer 'lam' in config.json {LAMBDA}",
        "serialized Python lambda in config.json (bytecode run when loaded)",
    )
    assert m.metadata["n_layers"] == 7 and len(m.tensors) == 4


def test_config_safety_keras2_registered_names() -> None:
    cfg = {
        "layers": [{"class_name": "mypkg>Scale", "config": {}}, {"class_name": "Custom>Adam", "config": {}}]
    }
    assert kr.config_safety(cfg, "model_config") == (
        ["mypkg>Scale"],  # a registration package, not an importable module
        ["custom object mypkg>Scale in model_config (needs user code to load)"],
    )


def test_keras3_registered_names_as_keras_writes_them() -> None:
    """What Keras 3.15 writes (checked against `model.save`): a class defined in the saving script has
    `module: null` and is known only by its registered name; a function's `module` is `builtins` (the module
    of the function type) and its registered name sits in `config`. Nothing says `__main__`."""

    def obj(module: str | None, cls: str, registered: str | None, config: object = None) -> dict[str, object]:
        return {
            "module": module,
            "class_name": cls,
            "config": {} if config is None else config,
            "registered_name": registered,
        }

    wrapped = obj("keras.layers", "TimeDistributed", None, {"layer": obj(None, "Scale", "realgen>Scale")})
    cfg = obj(
        "keras",
        "Functional",
        None,
        {
            "layers": [
                wrapped,
                obj(None, "Plain", "Plain"),  # not registered: its bare class name
                obj("mymod", "Mine", "pkg>Mine"),  # imported from a module: the module is recorded
                obj(
                    "keras.layers",
                    "Dense",
                    None,
                    {"activation": obj("builtins", "function", "function", "realgen>act")},
                ),
                obj(
                    "keras.layers",
                    "Dense",
                    None,
                    {"activation": obj("builtins", "function", "function", "my_act")},
                ),
                obj("keras.src.backend.torch.optimizers.torch_adam", "Adam", "Adam"),
                obj("keras.layers", "BatchNormalization", None),
            ]
        },
    )
    assert kr.config_safety(cfg, "config.json") == (
        ["realgen>Scale", "Plain", "mymod.Mine", "realgen>act", "my_act"],
        [
            "custom object realgen>Scale (no module recorded) in config.json (needs user code to load)",
            "custom object Plain (no module recorded) in config.json (needs user code to load)",
            "custom object mymod.Mine (registered as 'pkg>Mine') in config.json (needs user code to load)",
            "custom function 'realgen>act' in config.json (needs user code to load)",
            "custom function 'my_act' in config.json (needs user code to load)",
        ],
    )


def test_keras2_split_name_attributes() -> None:
    """tf.keras splits name lists over 64 KiB into layer_names0, layer_names1, ..."""
    groups = {
        "model_weights": {"layer_names0": ["a"], "layer_names1": ["b"]},
        "model_weights/a": {"weight_names0": ["a/k:0"], "weight_names1": ["a/b:0"]},
        "model_weights/b": {"weight_names": ["a/k:0"]},  # a repeated name gets its layer prefix
    }
    warnings: list[str] = []
    assert kr.keras2_weight_paths("model_weights", groups, warnings) == [
        ("a/k:0", "model_weights/a/a/k:0"),
        ("a/b:0", "model_weights/a/a/b:0"),
        ("b/a/k:0", "model_weights/b/a/k:0"),
    ]
    assert warnings == []


# ------------------------------------------------------------------------------------- dataset reads


def test_read_hdf5_dataset(files: dict[str, Path], metas: dict[str, CheckpointMeta]) -> None:
    cases = [
        (metas["generic"].tensor("decoder/big").loc, values((50, 20), start=1), "float32"),
        (
            Hdf5Location(str(files["generic"]), "/encoder/layer2/weight"),
            values((2, 3), "<i4", start=7),
            "int32",
        ),
        (metas["dot_keras"].tensor("layers/dense_1/vars/0").loc, values((3, 2), start=20), "float32"),
        (metas["dot_keras_deflated"].tensor("layers/dense/vars/1").loc, values((3,), start=10), "float32"),
        (Hdf5Location(str(files["generic"]), "count"), np.array(42, "<i8"), "int64"),
    ]
    for loc, want, dtype in cases:
        data, got_dtype, shape = hr.read_hdf5_dataset(loc, DEFAULT_LIMITS)
        assert (got_dtype, shape) == (dtype, want.shape), loc
        assert data == want.tobytes(), loc  # C order, little-endian (the big-endian one was converted)


def test_read_hdf5_dataset_bfloat16_as_keras3_saves_it(tmp_path: Path) -> None:
    path = tmp_path / "bf16.weights.h5"
    raw = np.arange(6, dtype="<u2").reshape(2, 3) + 0x3F80
    with h5py.File(path, "w") as f:
        d = f.create_dataset("layers/dense/vars/0", data=raw.view("V2"))
        d.attrs["dtype"] = "bfloat16"
    m = hr.read_hdf5(path, DEFAULT_LIMITS)
    assert _summary(m) == [("layers/dense/vars/0", (2, 3), "bfloat16")] and m.tensors[0].nbytes == 12
    data, dtype, shape = hr.read_hdf5_dataset(Hdf5Location(str(path), "/layers/dense/vars/0"), DEFAULT_LIMITS)
    assert (data, dtype, shape) == (raw.tobytes(), "bfloat16", (2, 3))


@pytest.mark.parametrize(
    ("dataset", "cause"),
    [
        ("/alias", "/alias is a SoftLink; not followed"),
        ("/nope", "no dataset /nope"),
        ("/meta/names", "dataset is not numeric (string)"),
        ("/encoder", "/encoder is not a dataset"),
    ],
)
def test_read_hdf5_dataset_refusals(files: dict[str, Path], dataset: str, cause: str) -> None:
    with pytest.raises(FormatError) as exc:
        hr.read_hdf5_dataset(Hdf5Location(str(files["generic"]), dataset), DEFAULT_LIMITS)
    assert str(exc.value) == f"{files['generic']}: {cause}"


def test_read_hdf5_dataset_refuses_external_storage(files: dict[str, Path]) -> None:
    with pytest.raises(FormatError, match=r"external raw storage; refusing to read other files$"):
        hr.read_hdf5_dataset(Hdf5Location(str(files["links"]), "/ext_raw"), DEFAULT_LIMITS)


def test_worker_memory_cap(tmp_path: Path) -> None:
    """A dataset declared at 1 GiB (tiny on disk: never written) cannot be read under a 512 MiB cap."""
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("huge", shape=(2**28,), dtype="f4", chunks=(2**20,))
    assert hr.read_hdf5(path, DEFAULT_LIMITS).tensors[0].nbytes == 2**30
    with pytest.raises(FormatError) as exc:
        hr.read_hdf5_dataset(Hdf5Location(str(path), "/huge"), Limits(hdf5_memory_bytes=512 * 2**20))
    assert str(exc.value) == f"{path}: HDF5 parser ran out of memory (limit 512 MiB)"


# --------------------------------------------------------------------------------------------- errors


def test_bad_hdf5_files_give_one_line_errors(tmp_path: Path, files: dict[str, Path]) -> None:
    good = files["generic"].read_bytes()
    cases = {
        "empty.h5": (b"", "empty file (0 bytes)"),
        "truncated.h5": (good[:1000], f"truncated HDF5 file (1000 of {len(good)} bytes)"),
        "garbage.h5": (
            CORRUPT_HDF5,
            "cannot open HDF5 file (bad superblock version number)",
        ),
        "text.h5": (b"hello world, not hdf5" * 10, "not an HDF5 file (no HDF5 signature)"),
    }
    paths = []
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
        paths.append(tmp_path / name)
    paths.append(tmp_path / "missing.h5")
    results = hr.read_hdf5_many(paths, DEFAULT_LIMITS)
    causes = [c for _, c in cases.values()] + ["cannot read: No such file or directory"]
    assert [str(r) for r in results] == [f"{p}: {c}" for p, c in zip(paths, causes, strict=True)]
    assert all(type(r) is FormatError for r in results)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_bad_keras_archives(tmp_path: Path, files: dict[str, Path]) -> None:
    weights = zipfile.ZipFile(files["dot_keras"]).read("model.weights.h5")
    not_zip = tmp_path / "a.keras"
    not_zip.write_bytes(b"not a zip at all" * 4)
    cases = [
        (
            not_zip,
            DEFAULT_LIMITS,
            "not a complete zip archive (no end-of-central-directory record; truncated?)",
        ),
        (
            _zip(tmp_path / "b.keras", {"config.json": b"{}"}),
            DEFAULT_LIMITS,
            "no model.weights.h5 in .keras archive",
        ),
        (
            _zip(tmp_path / "c.keras", {"config.json": b"{", "model.weights.h5": weights}),
            DEFAULT_LIMITS,
            "config.json is not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        (
            files["dot_keras"],
            Limits(max_keras_weights_bytes=1000),
            f"model.weights.h5 declares {len(weights)} bytes inflated (limit 1000)",
        ),
        (
            files["dot_keras"],
            Limits(max_keras_member_bytes=100),
            f"config.json declares {len(json.dumps(keras3_config()))} bytes inflated (limit 100)",
        ),
        (files["dot_keras"], Limits(max_zip_entries=2), "zip declares 3 entries, over the cap of 2"),
        (
            _zip(tmp_path / "d.keras", {"model.weights.h5": CORRUPT_HDF5}),
            DEFAULT_LIMITS,
            "cannot open HDF5 file (bad superblock version number)",
        ),
    ]
    for path, limits, cause in cases:
        with pytest.raises(FormatError) as exc:
            hr.read_keras(path, limits)
        assert str(exc.value) == f"{path}: {cause}"
    with pytest.raises(LimitError):  # caps raise the LimitError subclass
        hr.read_keras(files["dot_keras"], Limits(max_zip_entries=2))


def test_object_cap(files: dict[str, Path]) -> None:
    with pytest.raises(LimitError) as exc:
        hr.read_hdf5(files["generic"], Limits(max_hdf5_objects=5))
    assert str(exc.value) == f"{files['generic']}: more than 5 HDF5 objects"


@pytest.fixture
def flaky_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_flaky_worker(monkeypatch)
    yield
    pool.shutdown()  # pooled flaky workers must not outlive the test


def test_worker_crash_fails_only_that_file(
    tmp_path: Path, files: dict[str, Path], flaky_worker: None
) -> None:
    boom = tmp_path / "boom.h5"
    boom.write_bytes(files["generic"].read_bytes())
    results = hr.read_hdf5_many([files["keras3"], boom, files["generic"]], DEFAULT_LIMITS)
    assert str(results[1]) == f"{boom}: HDF5 parser crashed (signal 11)"
    assert isinstance(results[0], CheckpointMeta) and isinstance(results[2], CheckpointMeta)
    assert results[2].n_tensors == 8  # the batch went on in a fresh worker


def test_worker_timeout(tmp_path: Path, files: dict[str, Path], flaky_worker: None) -> None:
    slow = tmp_path / "slow.h5"
    slow.write_bytes(files["generic"].read_bytes())
    results = hr.read_hdf5_many([files["keras2"], slow, files["keras3"]], Limits(hdf5_timeout_s=1.5))
    assert str(results[1]) == f"{slow}: HDF5 parser timed out after 1.5s"
    assert isinstance(results[0], CheckpointMeta) and isinstance(results[2], CheckpointMeta)


# -------------------------------------------------------------------------------------------- isolation


def test_parent_never_imports_h5py(files: dict[str, Path]) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from ckptlab.formats.hdf5_reader import read_hdf5, read_keras; "
        "from ckptlab.formats.limits import DEFAULT_LIMITS as L; "
        f"read_hdf5(Path({str(files['keras2'])!r}), L); read_keras(Path({str(files['dot_keras'])!r}), L); "
        "print('h5py' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_worker_runs_as_module_with_argv_request(files: dict[str, Path]) -> None:
    request = {
        "op": "meta",
        "items": [
            {"path": str(files["keras3"])},
            {"path": str(files["dot_keras"]), "member": "model.weights.h5"},
        ],
        "max_objects": 1000,
        "max_attr_bytes": 1 << 20,
        "memory_bytes": 1 << 30,
    }
    out = subprocess.run(
        [sys.executable, "-m", "ckptlab.formats.hdf5_worker", json.dumps(request)],
        capture_output=True,
        check=True,
    )
    answers = [json.loads(line) for line in out.stdout.splitlines()]  # no hello line in argv mode
    assert [a["ok"] for a in answers] == [True, True]
    ds = {o[1]: o for o in answers[0]["facts"]["objects"] if o[0] == "d"}
    # ["d", path, addr, shape, dtype, kind, layout, offset, storage_size, attrs, external, virtual]
    assert ds["layers/dense/vars/0"][3:7] == [[4, 3], "<f4", "numeric", "contiguous"]
    assert ds["layers/dense/vars/0"][8:] == [48, {}, [], []]
