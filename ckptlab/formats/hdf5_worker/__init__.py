"""The isolated HDF5 child process: the only code in ckptlab that imports h5py.

libhdf5 is C with a history of heap overflows on crafted files, so the parent (`hdf5_client`) never parses
HDF5 itself: it spawns this package, caps its address space, and turns a crash, a hang or an out-of-memory
into a one-line error. Every module here must stay self-contained (stdlib + numpy + h5py, relative imports
within this package only, no ckptlab imports) so the parent can load the package by path without importing
the ckptlab package in the child (see `hdf5_client.launch`).

    serve     the protocol: the request loop, answers, failures, the memory cap
    walk      the breadth-first metadata walk of one file (the `meta` op)
    dataset   one dataset's raw bytes (the `dataset` op)
    values    HDF5 names, types and attribute values as plain JSON
    files     opening a file or a zip member for libhdf5
    errors    WorkerError, the clean failure of one item

Protocol: the worker imports h5py, says `{"ready": true}` on stdout, then serves requests, one JSON object
per line on stdin, until stdin closes or no request came for the last request's `idle_exit_s` seconds. The
first request's `memory_bytes` caps the address space for the worker's whole life. A single request may
instead be given as argv[1]; the worker then answers it, without the hello, and exits.

    {"op": "meta", "items": [{"path": "/a.h5"}, {"path": "/m.keras", "member": "model.weights.h5"}],
     "max_objects": 500000, "max_attr_bytes": 67108864, "memory_bytes": 2147483648, "idle_exit_s": 120}

answers one JSON line per item, in request order, flushed as each item finishes (so a crash on item k still
leaves the answers for items before k):

    {"ok": true, "facts": {"objects": [...]}}
    {"ok": false, "error": "cause", "limit": false}

Objects are listed breadth-first from the root, as lists (half the parse time of dicts in the parent):

    ["g", path, attrs]                  a group ("" is the root) and its attributes {name: value}
    ["a", path]                         a group already listed under another path (a hard-link alias or cycle)
    ["d", path, addr, shape, dtype, kind, layout, offset, storage_size, attrs, external, virtual]
                                        a dataset: object address, shape (None: no dataspace), numpy dtype
                                        string, 'numeric'/'string'/'compound'/..., 'contiguous'/'chunked'/...,
                                        file offset of contiguous data in this file or None, bytes stored,
                                        attributes, external storage [[file, offset, size]], virtual
                                        sources [[file, dataset]]
    ["s", path, target]                 a soft link       ["e", path, file, target]   an external link
    ["u", path]                         a user-defined link                ["t", path]   a committed datatype

An answer with `"bye": true` is the worker's last: the file raised an error this code did not foresee, so
the worker exits rather than parse more files in a state nobody checked; the parent sends the rest to a
new one.

    {"op": "dataset", "path": "/a.h5", "member": null, "dataset": "/x", "memory_bytes": 2147483648,
     "idle_exit_s": 120}

answers one JSON header line `{"ok": true, "dtype": "<f4", "shape": [2, 3], "nbytes": 24, "attr_dtype": null}`
followed by exactly `nbytes` raw C-order little-endian bytes.
"""
