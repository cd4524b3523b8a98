"""The picklescan corpus: malicious, benign and broken pickles / PyTorch files / zips found in the wild.

Every file must give a result or a clear one-line `CkptlabError` through `read_meta` (nothing else may
escape), no malicious file may come back `safe=True`, the dangerous global must be named (in the verdict or
in the error line), and nothing may be executed: tripwires guard os.system / subprocess / pickle's loaders,
and the working directory and temp dir are watched for files a payload would drop (`broken_model.pkl`
writes `my_file.txt` into the cwd if run). See `../shared/corpora/picklescan/README.md`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from adversarial import armed, assert_one_line_error, time_limit

from ckptlab import read_meta
from ckptlab.cli import main as cli_main
from ckptlab.errors import CkptlabError

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "picklescan"
FILES = sorted(
    p for d in ("data", "data2") if (CORPUS / d).is_dir() for p in (CORPUS / d).iterdir() if p.is_file()
)
IDS = [f"{p.parent.name}/{p.name}" for p in FILES]

pytestmark = pytest.mark.skipif(not FILES, reason=f"picklescan corpus not found at {CORPUS}")

# README: "The benign ones (benign0_*.pkl, pytorch_model.bin, new_pytorch_model.bin) should open."
BENIGN = {"data/benign0_v0.pkl", "data/benign0_v3.pkl", "data/benign0_v4.pkl"}
BENIGN_CHECKPOINTS = {"data/pytorch_model.bin", "data/new_pytorch_model.bin"}
# not malicious, merely not checkpoints (an image, a non-pickle, plain numpy arrays, an encrypted text file)
BROKEN = {
    "data/bad_pytorch.pt",
    "data/not_a_pickle.bin",
    "data/benign_password_protected.zip",
    "data2/int_array.npy",
    "data2/int_arrays.npz",
    "data2/int_arrays_compressed.npz",
}
# exploits whose names do not start with malicious / GHSA-
EXPLOIT_NAMES = {
    "data/broken_model.pkl",
    "data/pytorch_magic_bypass.pt",
    "data/sys_module_override_sploit.pkl",
    "data2/cloudpickle_codeinjection.pkl",
    "data2/dns_exfiltration.npy",
    "data2/io_FileIO.pkl",
    "data2/keyerror-exploit.pkl",
    "data2/logging_FileHandler.pkl",
    "data2/object_array.npy",
    "data2/object_arrays.npz",
    "data2/object_arrays_compressed.npz",
    "data2/type-confusion-exploit.pkl",
    "data2/types_CodeType.pkl",
    "data2/urllib_request_urlopen.pkl",
}

# the dangerous global each malicious pickle must be reported with (verdict or error line)
NAMED = {
    "data/broken_model.pkl": "builtins.exec",
    "data/malicious-invalid-bytes.pkl": "os.system",
    "data/malicious0.pkl": "builtins.eval",
    "data/malicious1.zip": "builtins.eval",
    "data/malicious10.pkl": "builtins.exec",
    "data/malicious11.pkl": "os.system",
    "data/malicious12.pkl": "builtins.__import__",
    "data/malicious13a.pkl": "pickle.loads",
    "data/malicious13b.pkl": "_pickle.loads",
    "data/malicious14.pkl": "runpy._run_code",
    "data/malicious15a.pkl": "bdb.Bdb",
    "data/malicious15b.pkl": "bdb.Bdb.run",
    "data/malicious16.pkl": "pip.main",
    "data/malicious17.pkl": "torch._inductor.codecache.compile_file",
    "data/malicious18.pkl": "pydoc.pipepager",
    "data/malicious19.pkl": "torch.serialization.load",
    "data/malicious1_central_directory.zip": "builtins.eval",
    "data/malicious1_v0.pkl": "builtins.eval",
    "data/malicious1_v3.pkl": "builtins.eval",
    "data/malicious1_v4.pkl": "builtins.eval",
    "data/malicious1_wrong_ext.zip": "builtins.eval",
    "data/malicious20.pkl": "venv.create",
    "data/malicious2_v0.pkl": "posix.system",
    "data/malicious2_v3.pkl": "posix.system",
    "data/malicious2_v4.pkl": "posix.system",
    "data/malicious3.pkl": "http.client.HTTPSConnection",
    "data/malicious4.pickle": "requests.api.get",
    "data/malicious5.pickle": "aiohttp.client.ClientSession",
    "data/malicious6.pkl": "requests.api.get",
    "data/malicious7.pkl": "socket.create_connection",
    "data/malicious8.pkl": "subprocess.run",
    "data/malicious9.pkl": "sys.exit",
    "data/pytorch_magic_bypass.pt": "posix.system",
    "data/sys_module_override_sploit.pkl": "torch._utils",
    "data2/GHSA-3gf5-cxq9-w223.pkl": "idlelib.pyshell.ModifiedInterpreter.runcode",
    "data2/GHSA-3vg9-h568-4w9m.pkl": "idlelib.debugobj.ObjectTreeItem.SetText",
    "data2/GHSA-4675-36f9-wf6r.pkl": "ctypes.CDLL",
    "data2/GHSA-46h3-79wf-xr6c.pkl": "builtins.__import__",
    "data2/GHSA-49gj-c84q-6qm9.pkl": "cProfile.run",
    "data2/GHSA-4r9r-ch6f-vxmx.pkl": "torch.utils.bottleneck.__main__.run_cprofile",
    "data2/GHSA-4whj-rm5r-c2v8.pkl": "torch.utils.bottleneck.__main__.run_autograd_prof",
    "data2/GHSA-5qwp-399c-mjwf.pkl": "trace.Trace.run",
    "data2/GHSA-6vqj-c2q5-j97w.pkl": "profile.Profile.runctx",
    "data2/GHSA-6w4w-5w54-rjvr.pkl": "idlelib.autocomplete.AutoComplete.get_entity",
    "data2/GHSA-7cq8-mj8x-j263.pkl": "idlelib.autocomplete.AutoComplete.fetch_completions",
    "data2/GHSA-7wx9-6375-f5wh.pkl": "profile.run",
    "data2/GHSA-84r2-jw7c-4r5q.pkl": "pydoc.locate",
    "data2/GHSA-86cj-95qr-2p4f.pkl": "torch._dynamo.guards.GuardBuilder.get",
    "data2/GHSA-8r4j-24qv-fmq9.pkl": "idlelib.calltip.Calltip.fetch_tip",
    "data2/GHSA-955r-x9j8-7rhh.pkl": "builtins.__import__",
    "data2/GHSA-9w88-8rmg-7g2p.pkl": "cProfile.runctx",
    "data2/GHSA-9xph-j2h6-g47v.pkl": "idlelib.calltip.get_entity",
    "data2/GHSA-cj3c-v495-4xqh.pkl": "code.InteractiveInterpreter.runcode",
    "data2/GHSA-f4x7-rfwp-v3xw.pkl": (
        "torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression"
    ),
    "data2/GHSA-f54q-57x4-jg88.pkl": "lib2to3.pgen2.grammar.Grammar.loads",
    "data2/GHSA-f745-w6jp-hpxx.pkl": "torch.utils.collect_env.run",
    "data2/GHSA-fqq6-7vqf-w3fg.pkl": "doctest.debug_script",
    "data2/GHSA-g344-hcph-8vgg.pkl": "trace.Trace.runctx",
    "data2/GHSA-g38g-8gr9-h9xp-aix-support.pkl": "_aix_support._read_cmd_output",
    "data2/GHSA-g38g-8gr9-h9xp-imaplib.pkl": "imaplib.IMAP4_stream",
    "data2/GHSA-g38g-8gr9-h9xp-osx-support.pkl": "_osx_support._read_output",
    "data2/GHSA-g38g-8gr9-h9xp-pyrepl-pager.pkl": "_pyrepl.pager.pipe_pager",
    "data2/GHSA-g38g-8gr9-h9xp-test.pkl": "test.support.script_helper.assert_python_ok",
    "data2/GHSA-g38g-8gr9-h9xp-uuid.pkl": "uuid._get_command_stdout",
    "data2/GHSA-h3qp-7fh3-f8h4.pkl": "torch.utils.data.datapipes.utils.decoder.basichandlers",
    "data2/GHSA-j343-8v2j-ff7w.pkl": "idlelib.pyshell.ModifiedInterpreter.runcommand",
    "data2/GHSA-jgw4-cr84-mqxg.bin": "asyncio.unix_events._UnixSubprocessTransport._start",
    "data2/GHSA-jhph-76pp-mggw.pkl": "torch.utils.collect_env.run_and_read_all",
    "data2/GHSA-m273-6v24-x4m4.pkl": "distutils.file_util.write_file",
    "data2/GHSA-m869-42cg-3xwr.pkl": "idlelib.run.Executive.runcode",
    "data2/GHSA-p9w7-82w4-7q8m.pkl": "lib2to3.pgen2.pgen.ParserGenerator.make_label",
    "data2/GHSA-q77w-mwjj-7mqx.pkl": "asyncio.unix_events._UnixSubprocessTransport._start",
    "data2/GHSA-r8g5-cgf2-4m4m.pkl": "numpy.f2py.crackfortran.getlincoef",
    "data2/GHSA-vqmv-47xg-9wpr.pkl": "pty.spawn",
    "data2/GHSA-vr7h-p6mm-wpmh.pkl": "torch.jit.unsupported_tensor_ops.execWrapper",
    "data2/GHSA-vv6j-3g6g-2pvj.pkl": "torch.utils._config_module.ConfigModule.load_config",
    "data2/GHSA-vvpj-8cmc-gx39.pkl": "pkgutil.resolve_name",
    "data2/GHSA-x696-vm39-cp64.pkl": "profile.Profile.run",
    "data2/GHSA-xp4f-hrf8-rxw7.pkl": "ensurepip._run_pip",
    "data2/cloudpickle_codeinjection.pkl": "cloudpickle.cloudpickle._make_function",
    "data2/io_FileIO.pkl": "_io.FileIO",
    "data2/keyerror-exploit.pkl": "os.system",
    "data2/logging_FileHandler.pkl": "logging.FileHandler",
    "data2/malicious21.pkl": "timeit.timeit",
    "data2/malicious22.pkl": "numpy.testing._private.utils.runstring",
    "data2/malicious23.pkl": "os.system",
    "data2/type-confusion-exploit.pkl": "os.system",
    "data2/types_CodeType.pkl": "types.CodeType",
    "data2/urllib_request_urlopen.pkl": "urllib.request.urlopen",
}
# malicious files refused before their pickle is walked: a clear error, never a verdict. torch.load cannot
# open these either (a 7z, zips whose pickle is not data.pkl or not in a folder, numpy object arrays).
REFUSED_UNNAMED = {
    "data/malicious1.7z",
    "data/malicious1_0x1.zip",
    "data/malicious1_0x20.zip",
    "data/malicious1_0x40.zip",
    "data2/malicious1_crc.zip",
    "data2/dns_exfiltration.npy",
    "data2/object_array.npy",
    "data2/object_arrays.npz",
    "data2/object_arrays_compressed.npz",
}


def key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def is_malicious(k: str) -> bool:
    name = k.split("/", 1)[1]
    return name.startswith(("malicious", "GHSA-")) or k in EXPLOIT_NAMES


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A fresh cwd and temp dir that must stay empty while corpus files are read."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    corpus_before = {d: sorted(os.listdir(CORPUS / d)) for d in ("data", "data2")}
    yield cwd, tmp
    assert list(cwd.iterdir()) == [], "a file appeared in the working directory"
    assert list(tmp.iterdir()) == [], "a file appeared in the temp directory"
    assert {d: sorted(os.listdir(CORPUS / d)) for d in ("data", "data2")} == corpus_before


def test_corpus_classification_is_complete() -> None:
    # every file is known: benign, broken, or malicious with its global named (or refused unnamed)
    for k in IDS:
        known = k in BENIGN | BENIGN_CHECKPOINTS | BROKEN or k in NAMED or k in REFUSED_UNNAMED
        assert known, f"unclassified corpus file {k}"
        assert is_malicious(k) == (k in NAMED or k in REFUSED_UNNAMED), k


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_corpus_file(path: Path, watched: tuple[Path, Path]) -> None:
    k = key(path)
    with time_limit(10), armed() as calls:
        try:
            meta = read_meta(path)
        except CkptlabError as e:
            err: CkptlabError | None = e
            meta = None
        else:
            err = None
    assert calls == [], f"attempted {calls}"
    if err is not None:
        assert "\n" not in str(err) and str(err) == f"{path}: {err.cause}"
        if k in NAMED:
            assert NAMED[k] in err.cause, err.cause
        if k in BENIGN | BROKEN:
            assert "unsafe" not in err.cause, err.cause
        assert k not in BENIGN_CHECKPOINTS, f"benign checkpoint failed: {err}"
        return
    assert meta is not None
    json.dumps(meta.to_json(), allow_nan=False)
    if is_malicious(k):
        assert meta.safety.safe is False, f"malicious file reported safe: {k}"
        assert NAMED[k] in meta.safety.unsafe_globals
    else:
        assert k in BENIGN | BENIGN_CHECKPOINTS, f"{k} gave a result: {meta.format}"
        assert meta.safety.safe is True


def test_pytorch_model_bin_legacy_38_tensors() -> None:
    path = CORPUS / "data" / "pytorch_model.bin"
    meta = read_meta(path)
    assert meta.format == "torch-legacy" and meta.safety.safe
    assert meta.n_tensors == 38 and meta.n_params == 59114 and meta.dtypes == {"float32": 59114}
    assert meta.tensors[0].name == "distilbert.embeddings.word_embeddings.weight"
    assert meta.tensors[0].shape == (28996, 2)
    torch = pytest.importorskip("torch")
    sd = torch.load(path, weights_only=True)  # the benign reference, cross-checked with torch itself
    assert [t.name for t in meta.tensors] == list(sd)
    assert [t.shape for t in meta.tensors] == [tuple(v.shape) for v in sd.values()]


def test_new_pytorch_model_bin_zip() -> None:
    meta = read_meta(CORPUS / "data" / "new_pytorch_model.bin")
    assert meta.format == "torch-zip" and meta.safety.safe
    assert [(t.shape, t.dtype) for t in meta.tensors] == [((3, 4), "float32")]


def test_malicious1_zip_unsafe_eval() -> None:
    with armed():
        meta = read_meta(CORPUS / "data" / "malicious1.zip")
    assert meta.format == "torch-zip"
    assert meta.safety.safe is False and meta.safety.unsafe_globals == ("builtins.eval",)


def test_malicious2_v4_error_names_posix_system() -> None:
    path = CORPUS / "data" / "malicious2_v4.pkl"
    with armed(), pytest.raises(CkptlabError) as ei:
        read_meta(path)
    assert ei.value.cause == (
        "not a PyTorch checkpoint: a plain pickle (no legacy magic number); "
        "it references unsafe globals posix.system"
    )


def test_cli_over_the_whole_corpus(watched: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    codes: dict[str, int] = {}
    with time_limit(60), armed() as calls:
        for path in FILES:
            rc = cli_main(["inspect", str(path), "--json"])
            out, err = capsys.readouterr()
            codes[key(path)] = rc
            assert rc in (0, 1), (path, rc)
            if rc == 1:
                assert_one_line_error(out, err, path)
            else:
                assert err == ""
                doc = json.loads(out)
                assert doc["safety"]["safe"] is (key(path) in BENIGN | BENIGN_CHECKPOINTS)
    assert calls == []
    assert codes["data/pytorch_model.bin"] == 0 and codes["data/malicious1.zip"] == 0
    assert codes["data/malicious2_v4.pkl"] == 1
    assert sum(1 for c in codes.values() if c == 0) >= 4
