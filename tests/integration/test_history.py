"""History queries and retention, on SQLite and on PostgreSQL (migration 0018's indexes, PostgreSQL's trigram
index for ``q`` and ``tag``): the lists answer what a plain filter over the jobs says, on both stores; counts
stop at COUNT_CAP; --retain deletes finished jobs with their rows, and only those.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from corral.coordinator import retention
from corral.coordinator.errors import NotFound
from corral.coordinator.flow import job_rows
from corral.coordinator.service import Coordinator, NodeInfo
from corral.domain.spec import JobSpec
from corral.store import hooks, schema, sql, textsearch
from corral.store.migrate import alembic_config
from corral.store.sql import Store
from tests import pg
from tests.harness import Cluster

NOW = 1_800_000_000.0

WORDS = ["alpha", "Bravo", "delta", "gam_ma"]
STATES = ["completed", "failed", "cancelled", "pending", "running"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Store, list[dict[str, Any]]]]:
    """40 jobs: names, queues, tags, states and creation times varied; each with a log line. One store per
    engine for the module: the tests that read it come first, the retention test (which deletes) last."""
    if request.param == "sqlite":
        with _store(f"sqlite:///{tmp_path_factory.mktemp('history') / 'corral.db'}") as out:
            yield out
    else:
        with pg.fresh_database(request.getfixturevalue("pg_admin_url")) as url, _store(url) as out:
            yield out


@contextmanager
def _store(url: str) -> Iterator[tuple[Store, list[dict[str, Any]]]]:
    store = Store(url)
    jobs = []
    with store.transaction() as tx:
        for i in range(40):
            tags = [f"team-{i % 5}", "Prod" if i % 2 else "dev", *(["50%off"] if i % 4 == 2 else [])]
            spec = JobSpec.model_validate({"name": f"job {i} {WORDS[i % 4]}", "queue": f"q{i % 3}", "tags": tags,
                                           "tasks": [{"name": "t", "image": "busybox", **COMMANDS[i % 4](i)},
                                                     {"name": "second", "run": "echo SECOND"}]})
            job, tasks = job_rows(spec, NOW - 1000 + i * 10)
            tx.insert_jobs([(job, tasks)])
            jobs.append({**job, "command": _shown_command(spec.tasks[0].model_dump())})
    with store.engine.begin() as c:
        for i, job in enumerate(jobs):
            job["state"] = STATES[i % 5]
            job["finished_at"] = NOW - 500 + i if job["state"] in ("completed", "failed", "cancelled") else None
            c.execute(sa.text("UPDATE jobs SET state = :s, finished_at = :f WHERE id = :id"),
                      {"s": job["state"], "f": job["finished_at"], "id": job["id"]})
            for k in range(1 + i % 6):  # 1 to 6 lines of 1 to 9 characters ('x' * n), ts = their order
                c.execute(sa.text("INSERT INTO logs (job_id, task_id, execution_id, stream, line, ts) "
                                  "VALUES (:j, 't', 'e', 'stdout', :line, :ts)"),
                          {"j": job["id"], "line": "x" * (1 + (i + k) % 9), "ts": k})
    try:
        yield store, jobs
    finally:
        store.close()


# The first task's command, four ways: a script (mixed case, LIKE's wildcards), an argv list, an entrypoint.
COMMANDS: list[Callable[[int], dict[str, Any]]] = [
    lambda i: {"run": f"echo Hello {i}"},
    lambda i: {"command": ["sh", "-c", f"echo 50%OFF_{i} 'quoted'"]},
    lambda i: {"entrypoint": ["/bin/Gam_ma", str(i)]},
    lambda i: {"run": f"printf 'caf\u00c9 {i}'"},
]


def _shown_command(task: dict[str, Any]) -> str:
    """The command as nomad-lite shows it, written plainly."""
    if task.get("run") is not None:
        return str(task["run"])
    return shlex.join(task.get("command") or task.get("entrypoint") or [])


def _expected(jobs: list[dict[str, Any]], **f: Any) -> list[str]:
    """The ids a filter must give, newest first: the filter written plainly over the rows."""
    def keep(j: dict[str, Any]) -> bool:
        text = (j["name"] + " " + " ".join(j["tags"])).lower()
        return ((not f.get("state") or j["state"] in f["state"].split(","))
                and (not f.get("queue") or j["queue"] == f["queue"])
                and (not f.get("tag") or f["tag"].lower() in [t.lower() for t in j["tags"]])
                and (not f.get("q") or f["q"].lower() in text)
                and (f.get("created_after") is None or j["created_at"] >= f["created_after"])
                and (f.get("created_before") is None or j["created_at"] < f["created_before"])
                and (f.get("created_to") is None or j["created_at"] <= f["created_to"])
                and (not f.get("command") or f["command"].lower() in j["command"].lower())
                and (f.get("before_seq") is None or j["seq"] < f["before_seq"]))
    return [j["id"] for j in sorted(jobs, key=lambda j: -j["seq"]) if keep(j)]


FILTERS: list[dict[str, Any]] = [
    {}, {"state": "failed"}, {"state": "completed,cancelled"}, {"queue": "q1"}, {"queue": "q1", "state": "pending"},
    {"tag": "team-3"}, {"tag": "PROD"}, {"tag": "team"},  # a tag is matched whole, in any case
    {"q": "bravo"}, {"q": "0%O"}, {"q": "%"}, {"q": "gam_"}, {"q": "a_"}, {"tag": "50%OFF"},
    {"q": "job 1"}, {"q": "team-2"}, {"q": "nothing"},
    {"q": "alpha", "state": "completed"}, {"created_after": NOW - 800, "created_before": NOW - 700},
    {"created_after": NOW - 750, "q": "job"},
]


@pytest.mark.parametrize("f", FILTERS, ids=[str(sorted(f.items())) for f in FILTERS])
def test_job_lists_match_a_plain_filter(history: tuple[Store, list[dict[str, Any]]], f: dict[str, Any]) -> None:
    store, jobs = history
    want = _expected(jobs, **f)
    with store.read() as tx:
        rows, total = tx.list_jobs(**f, limit=7)
        assert [r["id"] for r in rows] == want[:7] and total == len(want)
        if rows:  # the next page, from the cursor
            rest, _ = tx.list_jobs(**f, before_seq=rows[-1]["seq"], limit=100)
            assert [r["id"] for r in rest] == want[7:]
        states = f.get("state", "").split(",") if f.get("state") else None
        if not f.get("q") and not f.get("queue"):  # what Tork and nomad-lite read
            found, n = tx.find_jobs(states=states, tag=f.get("tag"), offset=2, limit=5,
                                    created_from=f.get("created_after"))
            plain = _expected(jobs, state=f.get("state"), tag=f.get("tag"), created_after=f.get("created_after"))
            assert [r["id"] for r in found] == plain[2:7] and n == len(plain)


COMMAND_FILTERS: list[dict[str, Any]] = [
    {"command": "hello"}, {"command": "HELLO 1"}, {"command": "50%off_"}, {"command": "%"}, {"command": "_"},
    {"command": "'quoted'"}, {"command": "gam_ma 3"}, {"command": "/bin/gam"}, {"command": "café"},
    {"command": "second"}, {"command": "sh -c"}, {"command": "nothing"},
    {"command": "echo", "state": "failed"}, {"command": "1", "created_from": NOW - 900, "created_to": NOW - 700},
    {"created_from": NOW - 800, "created_to": NOW - 700}, {"created_to": NOW - 900},
]


@pytest.mark.parametrize("f", COMMAND_FILTERS, ids=[str(sorted(f.items())) for f in COMMAND_FILTERS])
def test_nomad_lite_filters_match_a_plain_filter(history: tuple[Store, list[dict[str, Any]]], f: dict[str, Any]
                                                 ) -> None:
    """The command filter (jobs.command_search, 0019: the first task's command as shown, any case, LIKE's
    wildcards taken literally) and a time window (ix_jobs_created_seq), paged by offset and by cursor."""
    store, jobs = history
    states = [f["state"]] if f.get("state") else None
    want = _expected(jobs, state=f.get("state"), command=f.get("command"), created_after=f.get("created_from"),
                     created_to=f.get("created_to"))
    args = {"states": states, "command": f.get("command"), "created_from": f.get("created_from"),
            "created_to": f.get("created_to")}
    with store.read() as tx:
        found, n = tx.find_jobs(**args, offset=1, limit=3)
        assert [r["id"] for r in found] == want[1:4] and n == len(want)
        if found:
            rest, _ = tx.find_jobs(**args, before_seq=found[0]["seq"], limit=100)
            assert [r["id"] for r in rest] == want[2:]


# Terms for SQLite's text index (0021): shorter than its trigrams, case-differing, LIKE's wildcards, FTS5's query
# syntax (quotes, operators, column filters, prefixes), a NUL.
TEXT_TERMS = ["a", "jo", "job", "bravo", "BRAVO", "b 1", "ob 1", "job 1 ", "%", "0%o", "50%OFF", "gam_", "a_", "_ma",
              '"', 'a"b', '""', "'", "'quoted'", "hello 1", "HELLO", "café", "CAFÉ", "é 1", "alpha OR bravo",
              "AND", "NEAR(a b)", "bra*", "^job", "search:", "command_search : x", "{search}", "-", "(", "team",
              "team-2", "prod", "50%off_", "sh -c", "a\x00bc", "nothing"]


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store sends meanwhile."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)
    sa.event.listen(store.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", note)


@pytest.mark.parametrize("history", ["sqlite"], indirect=True)  # jobs_fts is SQLite's
@pytest.mark.parametrize("term", TEXT_TERMS, ids=[ascii(t) for t in TEXT_TERMS])
def test_text_filters_answer_the_same_with_and_without_the_index(history: tuple[Store, list[dict[str, Any]]],
                                                                 term: str) -> None:
    """On SQLite, q, tag and command are narrowed by jobs_fts where the term has three characters or more, and
    the answers (page, count, the page after the cursor) are those of the LIKE alone and of a plain filter."""
    store, jobs = history
    assert store.is_sqlite and store.text_index
    with _statements(store) as seen, store.engine.connect() as conn:
        for f in ({"q": term}, {"tag": term}, {"q": term, "state": "failed"}, {"command": term},
                  {"command": term, "tag": "prod"}):
            searched = [f"\x1f{t}\x1f" if k == "tag" else t for k, t in f.items() if k != "state"]
            answers = []
            for indexed in (True, False):
                tx = sql.Tx(conn, text_index=indexed)
                seen.clear()
                if "command" in f:
                    rows, n = tx.find_jobs(command=f["command"], tag=f.get("tag"), limit=3)
                    rest = tx.find_jobs(command=f["command"], tag=f.get("tag"), limit=100,
                                        before_seq=rows[-1]["seq"])[0] if rows else []
                else:
                    rows, n = tx.list_jobs(**f, limit=3)
                    rest = tx.list_jobs(**f, limit=100, before_seq=rows[-1]["seq"])[0] if rows else []
                used = any("jobs_fts" in s for s in seen)
                assert used == (indexed and any(textsearch.usable(t) for t in searched)), (f, indexed, seen)
                answers.append(([r["id"] for r in rows], n, [r["id"] for r in rest]))
            assert answers[0] == answers[1], f
            want = _expected(jobs, **f)
            assert answers[0] == (want[:3], len(want), want[3:] if want else []), f


@pytest.mark.parametrize("history", ["sqlite"], indirect=True)  # jobs_fts is SQLite's
def test_a_common_text_with_another_filter_is_read_by_the_other_filter(
        history: tuple[Store, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a state (or a queue, a window...), a text held by FTS_PROBE jobs or more is read along the state's
    index, only counted in jobs_fts; a rarer one along jobs_fts. The answers are the same."""
    store, jobs = history
    assert store.is_sqlite
    monkeypatch.setattr(sql, "FTS_PROBE", 5)
    with _statements(store) as seen, store.read() as tx:
        for f, rare in (({"q": "job", "state": "failed"}, False), ({"q": "job 1", "state": "failed"}, False),
                        ({"q": "job 11", "state": "failed"}, True), ({"q": "job"}, True)):
            seen.clear()
            rows, n = tx.list_jobs(**f, limit=3)
            assert ([r["id"] for r in rows], n) == (_expected(jobs, **f)[:3], len(_expected(jobs, **f))), f
            joined = [st for st in seen if "jobs.seq = jobs_fts.rowid" in st]
            assert bool(joined) == rare, (f, seen)


def test_tails_of_a_page_match_each_jobs_tail(history: tuple[Store, list[dict[str, Any]]]) -> None:
    """nomad-lite's list reads the last lines of a page of jobs in one statement: the same lines tail_logs
    gives job by job, under a line count and a byte budget (the newest line always)."""
    store, jobs = history
    ids = [j["id"] for j in jobs]
    with store.read() as tx:
        for n, budget in ((1000, 10**6), (3, 10**6), (5, 12), (4, 1)):
            got = tx.tail_logs_of_jobs(ids, n, budget, per_query=7)
            want = {j: tx.tail_logs(j, n, budget) for j in ids}
            assert got == want, (n, budget)
        assert sum(map(len, tx.tail_logs_of_jobs(ids, 1000, 10**6).values())) == sum(1 + i % 6 for i in range(40))


def test_counts_stop_at_the_cap(history: tuple[Store, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
                                ) -> None:
    store, jobs = history
    monkeypatch.setattr(sql, "COUNT_CAP", 10)
    with store.read() as tx:
        rows, total = tx.list_jobs(limit=3)
        assert total == 11 and [r["id"] for r in rows] == _expected(jobs)[:3]  # "more than 10"
        assert tx.list_jobs(state="failed", limit=3)[1] == 8  # under the cap: exact


WINDOWS: list[tuple[dict[str, Any], str]] = [  # a time window, and how it is read (with the caps below)
    ({"created_after": NOW - 900, "created_before": NOW}, "newest"),  # ends now: along the newest jobs
    ({"created_after": NOW - 900}, "newest"),  # does not end
    ({"created_after": NOW - 1000, "created_before": NOW - 800}, "sorted"),  # ends before 20 jobs
    ({"created_after": NOW - 700, "created_before": NOW - 670}, "sorted"),  # holds 3 jobs: few
    ({"created_after": NOW - 700, "created_before": NOW - 600, "state": "failed"}, "sorted"),  # 2 of them
    ({"created_after": NOW - 900, "created_before": NOW, "state": "completed,pending"}, "newest"),
]


@pytest.mark.parametrize(("f", "how"), WINDOWS, ids=[str(sorted(f.items())) for f, _ in WINDOWS])
def test_a_time_window_is_read_along_the_newest_jobs_or_sorted_and_the_page_is_the_same(
        history: tuple[Store, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, f: dict[str, Any],
        how: str) -> None:
    """A window that ends in the past, or holds few jobs, is read by created_at and sorted; one that ends
    now (or nearly), or does not end, along the newest jobs (its bounds as ``created_at + 0``, which no index
    answers). The caps are made small so that 40 jobs show both ways; the pages are what a plain filter says."""
    store, jobs = history
    monkeypatch.setattr(sql, "COUNT_CAP", 3)
    monkeypatch.setattr(sql, "WINDOW_WALK", 5)
    want = _expected(jobs, **f)
    with store.read() as tx, _statements(store) as seen:
        rows, total = tx.list_jobs(**f, limit=4)
        assert [r["id"] for r in rows] == want[:4] and total == min(len(want), 4)
        rest, _ = tx.list_jobs(**f, before_seq=rows[-1]["seq"], limit=100)
        assert [r["id"] for r in rest] == want[4:]
        page = [x for x in seen if "ORDER BY" in x and "LIMIT" in x]
        assert page and all(("created_at + " in x) == (how == "newest") for x in page), page
        assert all(("seq + " in x) == (how == "sorted") for x in page), page
        states = f["state"].split(",") if f.get("state") else None
        end = f.get("created_before")
        found, n = tx.find_jobs(states=states, created_from=f.get("created_after"), offset=1, limit=3,
                                created_to=None if end is None else end - 0.001)
        assert [r["id"] for r in found] == want[1:4] and n == min(len(want), 4)


def test_heartbeats_grouped_in_one_transaction(history: tuple[Store, list[dict[str, Any]]]) -> None:
    store, _ = history
    coord = Coordinator(store)
    ids = [coord.register(NodeInfo(name=f"hb{i}", hostname="h", version="t", cpu=2, memory=2**32, disk=0,
                                   runtimes=["process"]))["id"] for i in range(3)]
    usage = {"cpu_percent": 5.0, "memory_percent": 1.0}
    # the same node twice in a group, with and without usage, and an execution no node runs
    got = coord.nodes.heartbeat_many([(ids[0], [], usage), (ids[1], ["e" * 32], None), (ids[0], [], None)])
    assert got == [[], ["e" * 32], []]
    with store.read() as tx:
        assert tx.node(ids[0])["usage"] == usage
    # a node marked down comes back, an unknown one is told to register: each alone, the others renewed
    with store.transaction() as tx:
        assert tx.cas_node(ids[2], "ready", state="down")
    got = coord.nodes.heartbeat_many([(ids[2], [], None), ("0" * 32, [], None), (ids[1], [], usage)])
    assert got[0] == [] and isinstance(got[1], NotFound) and got[2] == []
    with store.read() as tx:
        assert tx.node(ids[2])["state"] == "ready" and tx.node(ids[1])["usage"] == usage


def test_retention_deletes_jobs_finished_before_the_cutoff(history: tuple[Store, list[dict[str, Any]]]) -> None:
    store, jobs = history
    retain = 480.0  # finished at NOW - 500 + i: i < 20 is older than NOW - 480
    old = {j["id"] for i, j in enumerate(jobs) if j["finished_at"] is not None and i < 20}
    n = retention.delete_retired(store, retain, threading.Event(), now=NOW, batch=5)
    assert n == len(old) == 12
    with store.read() as tx:
        left = {r["id"] for r in tx.list_jobs(limit=100)[0]}
    assert left == {j["id"] for j in jobs} - old
    with store.engine.connect() as c:
        for table in ("tasks", "logs"):
            owners = {r[0] for r in c.execute(sa.text(f"SELECT job_id FROM {table}"))}
            assert owners == left, table
    assert retention.delete_retired(store, retain, threading.Event(), now=NOW) == 0


def test_a_server_with_retain_deletes_old_finished_jobs(cluster: Cluster) -> None:
    cluster.start_server("--retain", "1s")
    body = {"queue": "nobody", "tasks": [{"name": "t", "image": "busybox", "run": "true"}]}
    waiting = cluster.submit(body)
    done = cluster.submit(body)
    assert cluster.client.post(f"/v1/jobs/{done['id']}/cancel").status_code == 200
    deadline = time.monotonic() + 15
    while cluster.client.get(f"/v1/jobs/{done['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the cancelled job was not deleted"
        time.sleep(0.1)
    assert cluster.job(waiting["id"])["state"] == "pending"  # unfinished: kept


def test_the_webhook_and_autodelete_passes_read_only_the_jobs_that_have_them(
        history: tuple[Store, list[dict[str, Any]]]) -> None:
    """Migration 0022: ix_jobs_hooks and ix_jobs_autodelete hold only the jobs with webhooks, an autoDelete
    time. With every job's NULL in them, an analyzed SQLite store read the whole jobs table for the webhook
    loop's restarted jobs and for the autoDelete pass, every second (150 ms each at 1,000,000 jobs).
    Retention (--retain) still reads the oldest finished jobs along ix_jobs_finished, in its order: a sort
    there would sort every job finished before the cutoff, for each batch."""
    store, _ = history
    with store.engine.begin() as c:
        c.execute(sa.text("ANALYZE"))
    with store.read() as tx:
        with _statements(store) as seen:
            hooks.restarted(tx, ["pending", "running"])
            hooks.expired_jobs(tx, NOW, ["completed", "failed", "cancelled"], 100)
            hooks.retired_jobs(tx, NOW, ["completed", "failed", "cancelled"], 100)
        assert len(seen) == 3
        if store.is_sqlite:
            restarted, expired, retired = (" ".join(str(r[-1]) for r in tx.c.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, _params(statement)).all()) for statement in seen)
            for plan in (restarted, expired):  # neither the whole table nor every finished job
                assert "SCAN jobs" not in plan and "ix_jobs_finished" not in plan, plan
            assert "ix_jobs_finished" in retired and "TEMP B-TREE" not in retired, retired
        if not store.is_sqlite:
            defs = dict(tx.c.execute(sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")).all())
            assert "WHERE (hooks_done IS NOT NULL)" in defs["ix_jobs_hooks"]
            assert "WHERE (auto_delete_after IS NOT NULL)" in defs["ix_jobs_autodelete"]


def _params(statement: str) -> tuple[Any, ...]:
    """Values for a statement's ``?`` placeholders: what the plan is asked for, not what it finds."""
    return (1,) * statement.count("?")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migration_0019_fills_the_command_of_existing_jobs(engine: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    """Jobs written at revision 0018 get their first task's command on upgrade."""
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(pg.fresh_database(request.getfixturevalue("pg_admin_url")))
        db = sa.create_engine(url)
        stack.callback(db.dispose)
        with db.begin() as c:
            cfg = alembic_config()
            cfg.attributes["connection"] = c
            command.upgrade(cfg, "0018")
        old = sa.MetaData()
        old.reflect(db, only=["jobs", "tasks"])
        typed = {name: sa.Table(name, sa.MetaData(), *(sa.Column(c.name, schema.metadata.tables[name].c[c.name].type)
                                                        for c in old.tables[name].columns))
                 for name in ("jobs", "tasks")}
        commands = [{"run": "echo Old ONE"}, {"command": ["echo", "two words"]}, {"image": "busybox"},
                    {"run": "echo three"}, {"run": "echo FOUR"}]
        ids = []
        with db.begin() as c:
            for i, cmd in enumerate(commands):
                spec = JobSpec.model_validate({"name": f"old {i}", "tasks": [{"name": "t", "image": "busybox", **cmd}]})
                job, tasks = job_rows(spec, NOW + i)
                seq = c.execute(sa.insert(typed["jobs"]).returning(typed["jobs"].c.seq),
                                {k: v for k, v in job.items() if k in typed["jobs"].c}).scalar_one()
                c.execute(sa.insert(typed["tasks"]), [{**{k: v for k, v in t.items() if k in typed["tasks"].c},
                                                       "job_seq": seq} for t in tasks])
                ids.append(job["id"])
        store = Store(url)  # upgrades to head
        stack.callback(store.close)
        with store.read() as tx:
            got = {r["id"]: r["command_search"] for r in tx.jobs_by_ids(ids)}
            assert [got[i] for i in ids] == ["echo old one", "echo 'two words'", None, "echo three", "echo four"]
            assert [r["id"] for r in tx.find_jobs(command="ECHO")[0]] == [ids[4], ids[3], ids[1], ids[0]]
            assert [r["id"] for r in tx.find_jobs(command="o w")[0]] == [ids[1]]


def test_the_text_index_is_rebuilt_at_start_when_a_migration_dropped_its_triggers(tmp_path: Path) -> None:
    """A later migration that alters jobs in batch mode recreates the table on SQLite, and its triggers go with
    it; a job written then is not in jobs_fts. The store's check at start rebuilds it: that job and one
    submitted after are found through the index."""
    url = f"sqlite:///{tmp_path / 'corral.db'}"

    def job(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return job_rows(JobSpec.model_validate({"name": name, "tasks": [{"name": "t", "run": f"echo {name}"}]}), NOW)
    store = Store(url)
    with store.transaction() as tx:
        tx.insert_jobs([job("before-migration")])
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what a migration's op.batch_alter_table('jobs') does
        with Operations(MigrationContext.configure(conn)).batch_alter_table("jobs", recreate="always") as batch:
            batch.add_column(sa.Column("later", sa.Integer))
        assert not textsearch.intact(conn)  # the triggers went with the old table
        sql.Tx(conn).insert_jobs([job("during-migration")])
    engine.dispose()

    store = Store(url)
    try:
        assert store.text_index
        with store.engine.connect() as conn:
            assert textsearch.intact(conn)
        with store.transaction() as tx:
            tx.insert_jobs([job("after-restart")])
        with _statements(store) as seen, store.read() as tx:
            for name in ("before-migration", "during-migration", "after-restart"):
                assert [r["name"] for r in tx.list_jobs(q=name.upper())[0]] == [name]
                assert [r["name"] for r in tx.find_jobs(command=f"echo {name}")[0]] == [name]
            assert [r["name"] for r in tx.list_jobs(q="-migration")[0]] == ["during-migration", "before-migration"]
            assert sum("jobs_fts" in s for s in seen) >= 7 * 2  # each list read the index (count and page)
    finally:
        store.close()
