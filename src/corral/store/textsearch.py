"""SQLite's index for the text filters (``?q=``, ``?tag=``, nomad-lite's ``command=``): an FTS5 table.

``jobs_fts`` (migration 0021, SQLite only) holds each job's ``search`` and ``command_search`` under the job's
``seq`` as rowid, tokenized in trigrams: a phrase query of a term finds the rows holding that substring (in
any case), so it can narrow the jobs that the ``LIKE`` on the real column then checks; the answers stay
those of the ``LIKE`` alone. Terms shorter than three characters have no trigram: they keep the scan.

Triggers on ``jobs`` keep it in step. A later migration that alters ``jobs`` in Alembic's batch mode
recreates the table on SQLite and its triggers are lost with it, so the store checks at start (``ensure``)
that the table and its triggers are there and that it reaches the newest job, and rebuilds it if not.
PostgreSQL has trigram GIN indexes on the columns instead (0018, 0019).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

log = logging.getLogger("corral.store")

TABLE = "jobs_fts"
COLUMNS = ("search", "command_search")
MIN_TERM = 3  # characters: a trigram index finds nothing shorter
TRIGGERS = {
    "jobs_fts_insert": "AFTER INSERT ON jobs BEGIN "
                       "INSERT INTO jobs_fts (rowid, search, command_search) "
                       "VALUES (new.seq, new.search, new.command_search); END",
    "jobs_fts_delete": "AFTER DELETE ON jobs BEGIN DELETE FROM jobs_fts WHERE rowid = old.seq; END",
    "jobs_fts_update": "AFTER UPDATE OF seq, search, command_search ON jobs BEGIN "
                       "DELETE FROM jobs_fts WHERE rowid = old.seq; "
                       "INSERT INTO jobs_fts (rowid, search, command_search) "
                       "VALUES (new.seq, new.search, new.command_search); END",
}

# For queries: the table, its rowid (a job's seq) and its hidden column of the table's name (``MATCH``).
fts = sa.table(TABLE, sa.column("rowid", sa.Integer), sa.column(TABLE, sa.Text))


def usable(term: str) -> bool:
    """Whether the index can narrow a search for ``term``: three characters at least (its trigrams), and
    none NUL (which FTS5's query parser would end the string at)."""
    return len(term) >= MIN_TERM and "\x00" not in term


def phrase(column: str, term: str) -> str:
    """An FTS5 query for ``term`` as a substring of ``column``: one quoted string, its quotes doubled, so
    that no character of a user's term is query syntax."""
    if column not in COLUMNS:
        raise ValueError(f"{column!r} is not a column of {TABLE}")
    return f'{column} : "' + term.replace('"', '""') + '"'


def supported(conn: sa.Connection) -> bool:
    """Whether this SQLite has FTS5 with the trigram tokenizer (3.34)."""
    version = tuple(int(x) for x in str(conn.execute(sa.text("SELECT sqlite_version()")).scalar_one()).split("."))
    fts5 = conn.execute(sa.text("SELECT 1 FROM pragma_compile_options WHERE compile_options = 'ENABLE_FTS5'"))
    return version >= (3, 34) and fts5.first() is not None


def intact(conn: sa.Connection) -> bool:
    """The table and its triggers exist, and its newest row is the newest job's."""
    have = {name for (name,) in conn.execute(sa.text(
        "SELECT name FROM sqlite_master WHERE (type = 'table' AND name = :t) OR (type = 'trigger' AND tbl_name = "
        "'jobs')"), {"t": TABLE})}
    if not {TABLE, *TRIGGERS} <= have:
        return False
    newest_job = conn.execute(sa.text("SELECT max(seq) FROM jobs")).scalar_one()
    newest_row = conn.execute(sa.text(f"SELECT rowid FROM {TABLE} ORDER BY rowid DESC LIMIT 1")).scalar()
    return bool(newest_job == newest_row)


def rebuild(conn: sa.Connection) -> None:
    """(Re)create the table from every job, and its triggers."""
    drop(conn)
    conn.execute(sa.text(f"CREATE VIRTUAL TABLE {TABLE} USING fts5({', '.join(COLUMNS)}, tokenize = 'trigram')"))
    conn.execute(sa.text(f"INSERT INTO {TABLE} (rowid, {', '.join(COLUMNS)}) "
                         f"SELECT seq, {', '.join(COLUMNS)} FROM jobs"))
    # Filled in one statement, the index is left in many segments, which FTS5 then merges a little at every later
    # write: one-job inserts at 1,000,000 jobs ran at half the rate without the triggers (60 against 115 a
    # second) until the segments were merged into one here (102 against 119; 21 s at 1,000,000 jobs).
    conn.execute(sa.text(f"INSERT INTO {TABLE} ({TABLE}) VALUES ('optimize')"))
    for name, body in TRIGGERS.items():
        conn.execute(sa.text(f"CREATE TRIGGER {name} {body}"))


def drop(conn: sa.Connection) -> None:
    """The table and its triggers, gone (if there)."""
    for name in TRIGGERS:
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))


def ensure(conn: sa.Connection, repair: bool = True) -> bool:
    """At start, on SQLite: whether the index can be used; rebuilt first (``repair``) if it is not whole.
    False where this SQLite has no trigram FTS5: the text filters scan the jobs."""
    if not supported(conn):
        log.warning("this SQLite (%s) has no FTS5 trigram tokenizer: text searches scan every job",
                    conn.execute(sa.text("SELECT sqlite_version()")).scalar_one())
        return False
    if intact(conn):
        return True
    if not repair:
        return False
    log.warning("the text search index of the jobs (%s) or its triggers are missing or behind: rebuilding it",
                TABLE)
    rebuild(conn)
    return True
