"""`python -m ckptlab.formats.hdf5_worker [request]`: run the worker (see the package docstring)."""

import sys

from .serve import main

if __name__ == "__main__":
    sys.exit(main())
