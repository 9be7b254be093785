"""`idguard backup DEST`: a consistent copy of a SQLite registry while it is being written.

SQLite's online backup API (`sqlite3.Connection.backup`) copies the database in one step, inside
one read transaction: the copy is the database as of one commit, and with the write-ahead log
(db/engine.py turns it on) writers go on meanwhile. The copy is written beside DEST under a
temporary name, checked (`PRAGMA integrity_check`), switched to a rollback journal (one
self-contained file), synced, and only then renamed to DEST: a DEST that exists is a whole,
checked backup. An existing DEST is never overwritten.

PostgreSQL is backed up with its own tools (a base backup plus WAL archiving, for
point-in-time recovery): POSTGRES_ADVICE, and docs/operations.md.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

POSTGRES_ADVICE = """\
idguard backup copies SQLite databases only. For PostgreSQL use its own tools (docs/operations.md):

  1. archive the write-ahead log continuously (postgresql.conf):
       wal_level = replica
       archive_mode = on
       archive_command = 'test ! -f /backup/wal/%f && cp %p /backup/wal/%f'
  2. take a base backup regularly (daily), from a role with REPLICATION:
       pg_basebackup -h DBHOST -U replicator -D /backup/base/$(date +%F) -Ft -z -Xs -P
  3. restore: unpack the base backup into an empty data directory, set
       restore_command = 'cp /backup/wal/%f %p'   (and recovery_target_time to stop early),
     create recovery.signal, start PostgreSQL; then start idguard.
  4. prove it: restore into a scratch server regularly and run `idguard ledger verify` there.
"""


class BackupError(Exception):
    """The backup was not made (DEST is untouched)."""


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    bytes: int
    pages: int
    seconds: float
    ledger_seq: int | None  # the copy's last ledger event (None: no ledger table)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for any other database (or an in-memory SQLite one)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def backup_sqlite(source: Path, dest: Path, *, busy_timeout_ms: int = 10_000) -> Backup:
    """Copy the SQLite database `source` to `dest` (see the module's docstring)."""
    if not source.is_file():
        raise BackupError(f"no database file at {source}")
    if dest.exists():
        raise BackupError(f"{dest} exists; choose a new name (a backup never overwrites one)")
    if not dest.parent.is_dir():
        raise BackupError(f"no directory {dest.parent}")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    started = time.monotonic()
    try:
        src = sqlite3.connect(source, timeout=busy_timeout_ms / 1000)
        try:
            copy = sqlite3.connect(partial)
            try:
                # pages=-1: the whole database in one step, in one read transaction of the
                # source, so the copy is one commit's state (a stepwise copy restarts whenever
                # another connection writes, and might never end under steady writes).
                src.backup(copy, pages=-1)
                copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
                check = [row[0] for row in copy.execute("PRAGMA integrity_check")]
                if check != ["ok"]:
                    raise BackupError(f"the copy failed its integrity check: {'; '.join(check[:5])}")
                pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
                seq = _ledger_seq(copy)
            finally:
                copy.close()
        finally:
            src.close()
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        partial.rename(dest)
        _sync_directory(dest.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"the backup failed: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Backup(dest, dest.stat().st_size, pages, time.monotonic() - started, seq)


def _ledger_seq(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT seq FROM ledger_head WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # not an idguard database (or not migrated)
        return None
    return None if row is None else int(row[0])


def _sync_directory(path: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
