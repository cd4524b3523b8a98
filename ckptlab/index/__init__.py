"""The checkpoint index: scanning roots into a SQLite store."""
