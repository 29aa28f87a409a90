"""The manifest's SQLite schema and its migrations.

The schema version lives in SQLite's ``user_version``. Each migration runs in one transaction
together with the version bump, so a crash mid-migration leaves the previous version intact.
States are plain text validated in Python rather than by ``CHECK`` constraints: SQLite cannot
alter a constraint in place, and a new state should not need a table rebuild.
"""

from __future__ import annotations

import sqlite3

from rfbatch.errors import ConfigError

_V1 = """
CREATE TABLE files (
    path        TEXT PRIMARY KEY,
    root        TEXT,
    rel         TEXT,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    inode       INTEGER NOT NULL DEFAULT 0,
    kind        TEXT,
    state       TEXT NOT NULL,
    batch_id    TEXT,
    shard_id    TEXT,
    member_name TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX files_by_state ON files (state, path);
CREATE INDEX files_by_batch ON files (batch_id, state, path);
CREATE INDEX files_by_shard ON files (shard_id);

CREATE TABLE members (
    batch_id    TEXT NOT NULL,
    member_name TEXT NOT NULL,
    path        TEXT NOT NULL,
    PRIMARY KEY (batch_id, member_name),
    UNIQUE (batch_id, path)
);

CREATE TABLE shards (
    shard_id    TEXT PRIMARY KEY,
    batch_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    file_count  INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX shards_by_batch ON shards (batch_id, state);

CREATE TABLE batches (
    batch_id       TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    expected_count INTEGER NOT NULL DEFAULT 0,
    job_id         TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    info           TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX batches_by_state ON batches (state, kind);

CREATE TABLE downloads (
    batch_id   TEXT NOT NULL,
    part_name  TEXT NOT NULL DEFAULT '',
    file_name  TEXT NOT NULL,
    size       INTEGER,
    state      TEXT NOT NULL,
    path       TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (batch_id, part_name, file_name)
);

CREATE TABLE webhook_events (
    event_id    TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
"""

# Append only: entry i takes the schema from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, *, where: str) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; return the version found.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database written by a
    newer rfbatch is refused rather than misread.
    """
    found = user_version(conn)
    if found > SCHEMA_VERSION:
        raise ConfigError(
            f"manifest {where} has schema version {found}, newer than this rfbatch "
            f"understands ({SCHEMA_VERSION}): upgrade rfbatch or use another state directory"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found
