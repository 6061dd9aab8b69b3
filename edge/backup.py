"""`edge backup PATH`: a consistent copy of the database through SQLite's online backup API, safe while the
daemon writes (WAL mode: the copy reads one snapshot and never blocks the writer)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .store import StoreError


def backup(database: Path, target: Path) -> int:
    """Copy `database` to `target` (owner-only, written beside it and renamed into place, so a crash never
    leaves half a backup under the final name); returns the bytes written."""
    if not database.is_file():
        raise StoreError(f"no database at {database} (store.path)")
    if target.is_dir():
        target = target / database.name
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))   # embeddings: biometric data
        # A plain connection (not Store): a backup never migrates the live database, it only reads it.
        source = sqlite3.connect(str(database), timeout=30)
        copy = sqlite3.connect(str(partial))
        try:
            # pages=-1: one step, under one read transaction, so the copy is a single consistent snapshot.
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")   # one self-contained file, no -wal beside it
            ok = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
            source.close()
        if ok != "ok":
            raise StoreError(f"backup of {database} failed its integrity check: {ok}")
        partial.replace(target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot back up {database} to {target}: {exc}") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write backup {target}: {exc.strerror or exc}") from None
    return target.stat().st_size
