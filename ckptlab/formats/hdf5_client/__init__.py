"""The client side of the isolated h5py worker (`hdf5_worker`): start it, send JSON requests, read answers
with a deadline, and turn a crash, timeout or out-of-memory of the child into one clear cause.

The parent never imports h5py: HDF5 is parsed by a C library with known heap-overflow CVEs, so a crash
there must end a child process, never the app.

Starting a worker costs ~0.15 s of CPU (Python, numpy and h5py imports), more than reading a hundred small
files, so a worker that answered cleanly goes back to a small per-process pool and serves the next request.
A worker is dropped instead when it crashed, hung, ran out of memory, answered garbage or said `bye` (an
error its code did not foresee), and after `pool._MAX_ITEMS_PER_WORKER` files, so whatever a long life in
libhdf5 leaks stays bounded; idle workers exit on their own after `runner._IDLE_EXIT_S`. A big batch is
shared by two workers when the machine has a core to spare.

    launch    the worker's command line and environment (the worker package loaded by path)
    child     one worker process: non-blocking requests, answers read with deadlines, why it stopped
    pool      idle workers kept for reuse, and when a worker is retired instead
    answers   an answer line as a dict, or the error it stands for
    runner    requests to one worker at a time: `run_dataset`, and metadata items through `Runner`
    batch     `run_meta`: one or two workers sharing a batch of metadata items
"""
