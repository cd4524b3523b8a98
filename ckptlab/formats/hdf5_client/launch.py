"""How a worker process is started: the command line that loads the `hdf5_worker` package by path, and the
environment it runs under."""

from __future__ import annotations

import os
import sys
from pathlib import Path

WORKER_PACKAGE = Path(__file__).parent.with_name("hdf5_worker")  # the worker's package directory

# Loads the worker package by path, as a top-level package named `hdf5_worker`, not `-m ckptlab...`, so the
# child imports neither the ckptlab package nor its readers (the worker's modules import only each other).
# Dropping sys.path[0] (the current directory under -c) before any further import means no stray json.py or
# numpy/ in the directory being scanned can shadow a real module. (-P does this too, but only from Python
# 3.11.)
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('hdf5_worker', sys.argv.pop(1))\n"
    "sys.modules['hdf5_worker'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(sys.modules['hdf5_worker'])\n"
    "from hdf5_worker.serve import main\n"
    "sys.exit(main())\n"
)


def worker_argv() -> list[str]:
    """The command line of a new worker."""
    return [sys.executable, "-c", _BOOTSTRAP, str(WORKER_PACKAGE / "__init__.py")]


def worker_env() -> dict[str, str]:
    """The environment of a new worker."""
    env = dict(os.environ)
    # one BLAS thread keeps the child's address-space reservation small and predictable under RLIMIT_AS;
    # file locking fails on read-only or network mounts and a reader never needs it
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env
