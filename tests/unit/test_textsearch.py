"""SQLite's text index (store.textsearch): a user's term is never FTS5 query syntax, and the index finds every
row whose text holds the term (it narrows; the LIKE on the column decides)."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.store import textsearch

# Characters FTS5's query syntax means something by, LIKE's wildcards, case pairs, the tag separator.
ALPHABET = st.sampled_from(list('ab AB"\'*:^()-+%_/\\.,{}éÉ\x1f') + ["AND", "OR", "NOT", "NEAR"])
TEXT = st.lists(ALPHABET, max_size=12).map("".join)


def test_a_term_is_one_quoted_string() -> None:
    assert textsearch.phrase("search", 'say "hi" AND *') == 'search : "say ""hi"" AND *"'
    assert textsearch.phrase("command_search", "") == 'command_search : ""'
    assert [textsearch.usable(t) for t in ("ab", "abc", "é é", "a\x00bc", "\x1fx\x1f")] == [
        False, True, True, False, True]


def _index(docs: list[tuple[str, str]]) -> sa.Engine:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE jobs (seq INTEGER PRIMARY KEY, search TEXT NOT NULL, command_search TEXT)"))
        c.execute(sa.text("INSERT INTO jobs (search, command_search) VALUES (:s, :c)"),
                  [{"s": s, "c": c} for s, c in docs] or [{"s": "x", "c": None}])
        assert textsearch.supported(c)
        textsearch.rebuild(c)
    return engine


@settings(max_examples=100, deadline=None)
@given(docs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=8), term=TEXT, column=st.sampled_from(
    textsearch.COLUMNS))
def test_the_index_finds_every_row_holding_the_term(docs: list[tuple[str, str]], term: str, column: str) -> None:
    docs = [(s.lower(), c.lower()) for s, c in docs]  # as the store writes them
    term = term.lower()
    engine = _index(docs)
    with engine.connect() as c:
        found = {r[0] for r in c.execute(sa.text("SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH :m"),
                                         {"m": textsearch.phrase(column, term)})}
    holding = {i + 1 for i, d in enumerate(docs) if term in d[textsearch.COLUMNS.index(column)]}
    if textsearch.usable(term):
        assert holding <= found, (docs, term)
    engine.dispose()


def test_triggers_keep_the_index_in_step() -> None:
    engine = _index([("first job", "echo one"), ("second job", "echo two")])
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO jobs (search, command_search) VALUES ('third', NULL)"))
        c.execute(sa.text("UPDATE jobs SET command_search = 'echo zwei' WHERE seq = 2"))
        c.execute(sa.text("DELETE FROM jobs WHERE seq = 1"))
        assert textsearch.intact(c)

        def match(q: str) -> list[int]:
            return [r[0] for r in c.execute(sa.text("SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH :m"), {"m": q})]
        assert match(textsearch.phrase("search", "job")) == [2]
        assert match(textsearch.phrase("command_search", "zwei")) == [2]
        assert match(textsearch.phrase("command_search", "two")) == []
        assert match(textsearch.phrase("search", "third")) == [3]
        c.execute(sa.text("DROP TRIGGER jobs_fts_insert"))
        assert not textsearch.intact(c)
        assert textsearch.ensure(c) and textsearch.intact(c)
    engine.dispose()
