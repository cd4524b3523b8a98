"""The checkpoint index: scanning roots into a SQLite store.

The store (`store`, `migrations`, `tensor_lists`, `rows`) is the only code that writes SQL. The scan
(`scan`, `discover`, `plan`, `reading`, `entries`) finds, fingerprints and reads checkpoints and hands the
rows to the store; `views` shapes stored entries for the app.
"""
