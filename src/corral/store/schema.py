"""The one schema, shared by SQLite and PostgreSQL. Migrations in ``migrations/`` create it.

Times are UNIX seconds (floats) so that both engines compare them the same way; the API formats them.
"""

from __future__ import annotations

import sqlalchemy as sa

from corral.store.sealing import SealedJSON

metadata = sa.MetaData()

ID = sa.String(32)
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", ID, nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("queue", sa.String(100), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("search", sa.Text, nullable=False),  # lower-cased name and tags, for ?q=
    sa.Column("spec", SealedJSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("task_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # Workflows (0003): a subjob names the task that started it; output is the job's 'output' expression,
    # evaluated when it completes; auto_delete_after (seconds) comes from autoDelete.after.
    sa.Column("parent_job_id", ID),
    sa.Column("parent_task_id", ID),
    sa.Column("output", sa.Text),
    sa.Column("auto_delete_after", sa.Float),
    # Webhooks: NULL when the job has none; else what was delivered so far ({"job": state, "tasks": {id: state}})
    # and whether delivery is over (the job finished and its last change went out).
    sa.Column("hook_marks", sa.JSON),
    sa.Column("hooks_done", sa.Boolean),
    # 0009: the job at the top of the tree a subjob was spawned from (detached ones too), NULL for a job
    # submitted or fired; the tasks of a tree count together against --max-tasks-per-job.
    sa.Column("root_job_id", ID),
    # 0013: the namespace it belongs to, and who created it (Identity.principal; NULL before 0013).
    sa.Column("namespace", sa.String(63), nullable=False, server_default="default"),
    sa.Column("created_by", sa.String(80)),
    # 0019: the first task's command, lower-cased (store.rows.command_search), for nomad-lite's ?command=
    sa.Column("command_search", sa.Text),
    # 0018: lists read newest first under a filter; finished_at for --retain
    sa.Index("ix_jobs_state_seq", "state", "seq"),
    sa.Index("ix_jobs_queue_seq", "queue", "seq"),
    sa.Index("ix_jobs_finished", "finished_at"),
    sa.Index("ix_jobs_namespace", "namespace", "seq"),
    sa.Index("ix_jobs_parent", "parent_job_id"),
    sa.Index("ix_jobs_root", "root_job_id"),
    # 0022: only the jobs that have webhooks, an autoDelete time (the others' NULLs made the index useless)
    sa.Index("ix_jobs_hooks", "hooks_done", sqlite_where=sa.text("hooks_done IS NOT NULL"),
             postgresql_where=sa.text("hooks_done IS NOT NULL")),
    sa.Index("ix_jobs_autodelete", "auto_delete_after", sqlite_where=sa.text("auto_delete_after IS NOT NULL"),
             postgresql_where=sa.text("auto_delete_after IS NOT NULL")),
    sa.Index("ix_jobs_created_seq", "created_at", "seq"),  # 0019 (was created_at alone): a window's page of seqs
)
# 0018, PostgreSQL only (where pg_trgm can be created): ?q= and ?tag= (substrings of search) by trigrams.
sa.Index("ix_jobs_search_trgm", jobs.c.search, postgresql_using="gin",
         postgresql_ops={"search": "gin_trgm_ops"}).ddl_if(dialect="postgresql")
# 0019, the same for nomad-lite's ?command= (substrings of command_search).
sa.Index("ix_jobs_command_trgm", jobs.c.command_search, postgresql_using="gin",
         postgresql_ops={"command_search": "gin_trgm_ops"}).ddl_if(dialect="postgresql")
# 0021, SQLite only: jobs_fts, an FTS5 trigram table over jobs.search and jobs.command_search (rowid: jobs.seq),
# kept by triggers on jobs, for the same filters; outside this metadata (store/textsearch.py makes and checks it).

tasks = sa.Table(
    "tasks", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", ID, nullable=False, unique=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("job_seq", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", SealedJSON, nullable=False),
    sa.Column("queue", sa.String(100), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("runtime", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),
    sa.Column("memory", sa.BigInteger, nullable=False),
    sa.Column("disk", sa.BigInteger, nullable=False),
    sa.Column("gpu", sa.Integer, nullable=False),
    sa.Column("node_selector", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # When a pending task may be placed: NULL while it waits for the task before it, in the future
    # during a retry's backoff.
    sa.Column("ready_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lost_count", sa.Integer, nullable=False, default=0),
    sa.Column("reason", sa.Text),  # why a pending task is not placed yet
    sa.Column("node_id", ID),
    sa.Column("execution_id", ID),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # Workflows (0003). kind: 'run' (placed on a node), 'template' (a 'run' whose expressions or 'if' are
    # evaluated first), 'parallel', 'each', 'subjob', 'steps' (pre, the task, post). parent_id: the composite
    # task this one belongs to (NULL at the top of the job). template: the spec as submitted, when 'spec'
    # holds its evaluated form. output: what the task wrote to $CORRAL_OUTPUT. progress: 0-100.
    sa.Column("kind", sa.String(16), nullable=False, server_default="run"),
    sa.Column("parent_id", ID),
    sa.Column("template", SealedJSON),
    sa.Column("output", sa.Text),
    sa.Column("progress", sa.Float),
    sa.Column("subjob_id", ID),
    # 0020: a pending task that no ready node could hold even empty (a queue nobody serves, a selector nothing
    # matches, more than the largest node has): the scheduling pass does not read it again until the ready
    # nodes change. Any other change to the row (a restart, a retry, a cancel) clears it (onupdate).
    sa.Column("parked", sa.Boolean, nullable=False, default=False, server_default=sa.false(), onupdate=False),
    sa.Index("ix_tasks_job", "job_id", "position"),
    sa.Index("ix_tasks_parent", "parent_id", "state", "position"),
    sa.Index("ix_tasks_kind", "kind", "state", "ready_at"),
    sa.Index("ix_tasks_ready", "state", "ready_at"),
    sa.Index("ix_tasks_job_seq", "job_id", "seq"),  # 0006: a job's tasks paged in creation order
)
# 0020: a scheduling pass reads each queue's ready tasks that are not parked in placement order (and finds the
# queues that hold pending tasks by skipping through it) without sorting every pending task or reading the
# parked ones.
sa.Index("ix_tasks_queue_order", tasks.c.state, tasks.c.queue, tasks.c.parked, tasks.c.priority.desc(),
         tasks.c.job_seq, tasks.c.position, tasks.c.ready_at)

executions = sa.Table(
    "executions", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("node_id", ID, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),
    sa.Column("memory", sa.BigInteger, nullable=False),
    sa.Column("disk", sa.BigInteger, nullable=False),
    sa.Column("gpu", sa.Integer, nullable=False),
    sa.Column("gpus", sa.JSON, nullable=False),
    sa.Column("container_id", sa.String(100)),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("scheduled_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # The bytes of output stored for this attempt (0008): past the coordinator's --max-log-bytes, one
    # truncation marker is stored and the rest dropped; the marker leaves it above the cap.
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_exec_task", "task_id"),
    sa.Index("ix_exec_job", "job_id"),  # 0018: a job's executions (deleting it, nomad-lite's worker filter)
    sa.Index("ix_exec_node_state", "node_id", "state"),
    sa.Index("ix_exec_state", "state"),
)

nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("version", sa.String(50), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),
    sa.Column("memory", sa.BigInteger, nullable=False),
    sa.Column("disk", sa.BigInteger, nullable=False),
    sa.Column("gpus", sa.JSON, nullable=False),  # [{"index", "name", "memory"}]
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("runtimes", sa.JSON, nullable=False),
    sa.Column("queues", sa.JSON, nullable=False),
    sa.Column("usage", sa.JSON, nullable=False),  # last measured {"cpu_percent", "memory_percent"}
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("last_heartbeat", sa.Float, nullable=False),
    # sha256 (hex) of the secret the node was given at its first registration; it proves the node's
    # identity on every later call. NULL for a node registered before secrets existed: never claimable.
    sa.Column("secret_hash", sa.String(64), nullable=True),
    # 0009: the address where the node's pods are reached (corral worker --advertise-address); NULL: unknown
    sa.Column("address", sa.String(255), nullable=True),
    # 0016: an operator drained the node (corral nodes drain) at this time; NULL: not drained by an operator
    sa.Column("drain_requested_at", sa.Float, nullable=True),
    # 0016: when what still runs on the drained node is stopped and placed elsewhere; NULL: no deadline
    sa.Column("drain_deadline", sa.Float, nullable=True),
    sa.Index("ix_nodes_state", "state"),
)

logs = sa.Table(
    "logs", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("execution_id", ID, nullable=False),
    sa.Column("stream", sa.String(6), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_logs_job", "job_id", "seq"),
)

schedules = sa.Table(
    "schedules", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("spec", SealedJSON, nullable=False),  # the job created at each tick (a JobSpec)
    sa.Column("state", sa.String(16), nullable=False),  # active | paused
    sa.Column("next_run_at", sa.Float, nullable=False),
    sa.Column("last_run_at", sa.Float),
    sa.Column("last_job_id", ID),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("namespace", sa.String(63), nullable=False, server_default="default"),  # 0013
    sa.Column("created_by", sa.String(80)),  # 0013
    sa.Index("ix_schedules_due", "state", "next_run_at"),
)

# A submission made with an Idempotency-Key (0007): a retry with the same key on the same route (scope)
# gets what the first one created (result: {"jobs": [ids]} or {"schedule": id}); the primary key makes a
# concurrent duplicate fail instead of creating a second job. fingerprint: a hash of what was submitted.
idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("scope", sa.String(50), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_idempotency_created", "created_at"),
)

# -- pods (0009): long-running work, placed on a node with its containers (see domain/pods.py) -------------
POD_ID = sa.String(64)  # native ids are new_id(); a dialect may choose its own (Podling's, Stacks')

pods = sa.Table(
    "pods", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", POD_ID, nullable=False, unique=True),
    sa.Column("origin", sa.String(16), nullable=False),  # native | podling | stacks
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),  # the PodSpec as validated (domain.pods.dump_pod)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),  # why pending, why failed, a back-off
    sa.Column("desired", sa.String(8), nullable=False),  # run | stop
    sa.Column("restart_policy", sa.String(16), nullable=False),
    sa.Column("runtime", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),  # summed requests
    sa.Column("memory", sa.BigInteger, nullable=False),
    sa.Column("disk", sa.BigInteger, nullable=False),
    sa.Column("gpu", sa.Integer, nullable=False),
    sa.Column("node_selector", sa.JSON, nullable=False),
    sa.Column("node_id", ID),
    sa.Column("instance_id", ID),  # one per placement: a move to another node is a new instance
    sa.Column("ready", sa.Boolean, nullable=False),
    sa.Column("ttl_expires_at", sa.Float),
    sa.Column("grace", sa.Float, nullable=False),  # seconds between SIGTERM and SIGKILL
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("scheduled_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(80)),  # 0013
    sa.Index("ix_pods_state", "state"),
    sa.Index("ix_pods_node", "node_id", "state"),
    sa.Index("ix_pods_namespace", "namespace", "seq"),
    sa.Index("ix_pods_ttl", "ttl_expires_at"),
    sa.Index("ix_pods_instance", "instance_id"),
)

pod_containers = sa.Table(
    "pod_containers", metadata,
    sa.Column("pod_id", POD_ID, primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # waiting | running | terminated
    sa.Column("reason", sa.Text),
    sa.Column("container_id", sa.String(128)),
    sa.Column("restart_count", sa.Integer, nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("ready", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # Output stored for the current instance (reset at each placement); past --max-log-bytes, a marker.
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
)

# A port taken on a node: the primary key makes taking one a compare-and-set. Rows go when the pod
# instance that holds them ends or moves. kind: host (asked for as hostPort) | node (allocated from
# --node-port-range) | service (a NodePort service's, on every node).
node_ports = sa.Table(
    "node_ports", metadata,
    sa.Column("node_id", ID, primary_key=True),
    sa.Column("port", sa.Integer, primary_key=True),
    sa.Column("protocol", sa.String(3), primary_key=True),
    sa.Column("pod_id", POD_ID),
    sa.Column("instance_id", ID),
    sa.Column("container", sa.String(63)),
    sa.Column("container_port", sa.Integer),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Index("ix_node_ports_pod", "pod_id"),
)

pod_logs = sa.Table(
    "pod_logs", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("pod_id", POD_ID, nullable=False),
    sa.Column("instance_id", ID, nullable=False),
    sa.Column("container", sa.String(63), nullable=False),
    sa.Column("stream", sa.String(6), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_pod_logs_pod", "pod_id", "seq"),
)

# A Podling task (0012): its id as Podling shapes them (YYYYMMDDHHMMSS-xxxxxxxx) and the native job of one
# task it runs as (api/dialects/podling.py). The row goes with its job.
podling_tasks = sa.Table(
    "podling_tasks", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", ID, nullable=False),
    sa.Column("job_id", ID, nullable=False),
    # What Podling's task holds that a job does not (probes, restartPolicy, ports, resources as given),
    # shown back as it came.
    sa.Column("extra", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("id", name="uq_podling_tasks_id"),
    sa.UniqueConstraint("job_id", name="uq_podling_tasks_job"),
)

# Services (0010): a stable name and port in front of the ready pods that match ``selector`` in
# ``namespace``. ``spec`` is the ServiceSpec as stored, NodePort ports with their ``nodePort`` filled in;
# a NodePort service also holds its ports on every node in ``node_ports`` (kind 'service'). ``version``
# grows by one on every update: an update is a compare-and-set on it.
services = sa.Table(
    "services", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(80)),  # 0013
    sa.UniqueConstraint("namespace", "name", name="uq_services_name"),
    sa.Index("ix_services_type", "type"),
)

# The Stacks API (0011): what a stack holds beyond its pod (pods.id == stacks.id, origin "stacks"): the
# sanitized manifest, the target ports, what it reserves against the namespace's quota and its time to live.
# A deleted or expired stack's row is deleted (a compare-and-set: the one who deletes it stops the pod).
stacks = sa.Table(
    "stacks", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("pod_spec", sa.Text, nullable=False),
    sa.Column("target_ports", sa.JSON, nullable=False),  # [{container_port, protocol}]
    sa.Column("cpu_milli", sa.BigInteger, nullable=False),
    sa.Column("memory_bytes", sa.BigInteger, nullable=False),
    sa.Column("ttl_expires_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_stacks_ttl", "ttl_expires_at"),
)

# A batch delete of stacks (POST /stacks/batch-delete): queued, then worked through one id at a time.
stack_batch_jobs = sa.Table(
    "stack_batch_jobs", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | completed | failed
    sa.Column("stack_ids", sa.JSON, nullable=False),
    sa.Column("done", sa.Integer, nullable=False),  # ids worked through so far
    sa.Column("deleted", sa.Integer, nullable=False),
    sa.Column("not_found", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("errors", sa.JSON, nullable=False),  # [{stack_id, error}], the first 100
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_stack_batch_jobs_status", "status"),
)

# The audit log (0014): who (the caller's identity, else "local" or "anonymous") did what change (created,
# cancelled, deleted, drained, changed a permission...) through which route, and when. Only the path is
# kept, never a query string or a body (they may hold credentials). Old entries are deleted (retention).
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("address", sa.String(64)),
    sa.Index("ix_audit_log_at", "at"),
)

# Join tokens (0014): made by an admin (corral tokens create --worker) for workers to register with instead
# of the cluster token; only the sha256 of the token is kept. Revoked or expired: refused (401).
join_tokens = sa.Table(
    "join_tokens", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", ID, nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # worker
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
)

# The coordinators sharing this database (several on PostgreSQL): each registers and renews its row.
coordinators = sa.Table(
    "coordinators", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("node_no", sa.Integer, nullable=False, unique=True),  # small and stable: nomad-lite's node_id
    sa.Column("instance", sa.String(64), nullable=False),  # this run of the process: new at each start
    sa.Column("address", sa.String(256), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
)

# One row (id 1): the leader's lease and its fencing epoch, raised by every change of leader.
leadership = sa.Table(
    "leadership", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("leader_id", sa.String(64)),
    sa.Column("holder", sa.String(64)),  # the instance of the leader that holds it: a restart must win it again
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("transfer_to", sa.String(64)),  # asked for: the leader hands its lease to this coordinator
    sa.Column("changed_at", sa.Float, nullable=False),
)

# -- identities (0013, corral.auth): users (password hashed with argon2), API keys (only their SHA-256 is
# kept: they are 256-bit random), and secrets of the server itself (the token signing key).
users = sa.Table(
    "users", metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("namespaces", sa.JSON),  # NULL: every namespace
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # the key's public part: crl_<id>_<secret>
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("owner", sa.String(80), nullable=False),  # Identity.principal of its maker
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("namespaces", sa.JSON),  # NULL: every namespace
    sa.Column("scopes", sa.JSON),  # NULL: all its role has
    sa.Column("hash", sa.String(64), nullable=False),  # SHA-256 of the whole key, hex
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Index("ix_api_keys_owner", "owner"),
)

auth_secrets = sa.Table(
    "auth_secrets", metadata,
    sa.Column("name", sa.String(32), primary_key=True),  # "jwt": the HS256 signing key
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Per-namespace quotas (0017, corral.domain.quotas): set by an admin; NULL: no bound on that one. A
# namespace without a row is not bounded (the Stacks namespace falls back to --stacks-quota).
namespace_quotas = sa.Table(
    "namespace_quotas", metadata,
    sa.Column("namespace", sa.String(63), primary_key=True),
    sa.Column("cpu", sa.Float),  # cores
    sa.Column("memory", sa.BigInteger),  # bytes
    sa.Column("gpus", sa.Integer),
    sa.Column("tasks", sa.Integer),  # scheduled or running executions
    sa.Column("pods", sa.Integer),  # placed pods
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
