"""A throw-away SQLite file for stage 0: pairing, grouping and sorting keys on disk.

Stage 0 must match transcripts to audio, find duplicates and write sorted files for corpora of
any size; holding every key in Python would make memory grow with the corpus. SQLite (in the
standard library) does the joins and the sorting with a bounded cache. Its text ordering
(memcmp of UTF-8) is the same as Python's ``str`` ordering and Kaldi's ``LC_ALL=C`` sort.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# Rows buffered in Python before going to the store: bounds memory, keeps inserts fast.
CHUNK = 1000


class KeyStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix=".stage0.", suffix=".sqlite", dir=directory)
        os.close(fd)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-1000")  # 1 MB page cache

    def create(self, table: str, columns: str) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS {table}")
        self.db.execute(f"CREATE TABLE {table} ({columns})")

    def insert(self, table: str, rows: Iterable[tuple]) -> None:
        it = iter(rows)
        first = next(it, None)
        if first is None:
            return
        marks = ",".join("?" * len(first))
        self.db.execute(f"INSERT INTO {table} VALUES ({marks})", first)
        self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", it)

    def index(self, table: str, column: str = "key") -> None:
        self.db.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column} ON {table} ({column})")

    def query(self, sql: str, params: tuple = ()) -> Iterator[tuple]:
        """Rows streamed from a cursor of its own (several may be open at once)."""
        yield from self.db.cursor().execute(sql, params)

    def scalar(self, sql: str, params: tuple = ()):
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
