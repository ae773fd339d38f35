"""Examples for the `--help` of the commands whose own help has none, added when the `corral` group is
built (corral.cli.main.build): every command's help ends with at least one example."""

from __future__ import annotations

import inspect

import click

EXAMPLES: dict[str, tuple[str, ...]] = {
    "server": (
        "corral server --database-url postgresql://corral:secret@db/corral --token T --api-token A",
        "corral server --bind 0.0.0.0 --port 8000 --database-url postgresql://... --token T --api-token A",
    ),
    "worker": (
        "corral worker --server http://coordinator:8000 --token T",
        "corral worker -s http://c1:8000,http://c2:8000 --token T --label zone=eu --queue default --queue gpu",
        "corral worker --runtime process --runtime docker --cpus 4 --memory 8Gi",
    ),
    "jobs get": ("corral jobs get 3f2a9c01b7e4", "corral jobs get 3f2a9c01b7e4 -o json | jq '.tasks[].state'"),
    "jobs cancel": ("corral jobs cancel 3f2a9c01b7e4",
                    "corral jobs ls --state pending -o json | jq -r '.items[].id' | xargs corral jobs cancel"),
    "jobs restart": ("corral jobs restart 3f2a9c01b7e4",),
    "jobs rm": ("corral jobs rm 3f2a9c01b7e4 9c0a5e77d2f1",),
    "schedules ls": ("corral schedules ls", "corral schedules ls -o json | jq -r '.items[].id'"),
    "schedules get": ("corral schedules get 5d1e0c9a7b3f",),
    "schedules pause": ("corral schedules pause 5d1e0c9a7b3f",),
    "schedules resume": ("corral schedules resume 5d1e0c9a7b3f",),
    "schedules rm": ("corral schedules rm 5d1e0c9a7b3f",),
    "nodes": ("corral nodes", "corral nodes get local", "corral nodes drain gpu-1 --deadline 10m"),
    "nodes drain": ("corral nodes drain gpu-1", "corral nodes drain 3f2a9c01b7e4 --deadline 10m"),
    "nodes undrain": ("corral nodes undrain gpu-1",),
    "queues": ("corral queues", "corral queues -o json | jq '.items[] | select(.workers == 0)'"),
    "services create": ("corral services create examples/web-service.yaml",),
    "services ls": ("corral services ls", "corral services ls -N team-a -o json"),
    "services get": ("corral services get 7b3f5d1e0c9a",),
    "services endpoints": ("corral services endpoints 7b3f5d1e0c9a",),
    "services rm": ("corral services rm 7b3f5d1e0c9a",),
    "pods": ("corral pods create examples/web-pod.yaml", "corral pods ls -l app=web",
             "corral pods logs 0c9a7b3f5d1e -f"),
    "pods create": ("corral pods create examples/web-pod.yaml", "corral pods create - -o json < pod.yaml"),
    "pods ls": ("corral pods ls", "corral pods ls -n team-a -l app=web,tier=front"),
    "pods get": ("corral pods get 0c9a7b3f5d1e",),
    "pods logs": ("corral pods logs 0c9a7b3f5d1e", "corral pods logs 0c9a7b3f5d1e -c sidecar --follow"),
    "pods rm": ("corral pods rm 0c9a7b3f5d1e", "corral pods rm 0c9a7b3f5d1e --grace 30",
                "corral pods rm 0c9a7b3f5d1e --purge"),
    "users create": ("corral users create alice --role operator --namespace team-a",),
    "users ls": ("corral users ls",),
    "users rm": ("corral users rm alice",),
    "users passwd": ("corral users passwd alice",),
    "keys create": ("corral keys create ci --scope submit --scope read --expires-in 30d",),
    "keys ls": ("corral keys ls",),
    "keys revoke": ("corral keys revoke KEY_ID",),
    "tokens create": ("corral tokens create --worker --ttl 1h",),
    "tokens ls": ("corral tokens ls",),
    "tokens revoke": ("corral tokens revoke TOKEN_ID",),
    "audit": ("corral audit", "corral audit --actor alice --action cancel -n 20"),
    "quotas set": ("corral quotas set team-a --cpu 8 --memory 16GB --gpus 2 --tasks 100 --pods 20",),
    "quotas ls": ("corral quotas ls",),
    "quotas rm": ("corral quotas rm team-a",),
    "cluster status": ("corral cluster status",),
    "cluster transfer": ("corral cluster transfer", "corral cluster transfer COORDINATOR_ID"),
    "cluster drain": ("corral cluster drain COORDINATOR_ID", "corral cluster drain COORDINATOR_ID --undo"),
}


def add_examples(group: click.Group, path: str = "") -> None:
    """Append the examples above to the help of each command of ``group`` whose help has none."""
    for name, cmd in group.commands.items():
        key = f"{path}{name}"
        examples = EXAMPLES.get(key)
        if examples and "Example" not in (cmd.help or ""):
            block = "\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples)
            text = inspect.cleandoc(cmd.help or cmd.short_help or "")
            cmd.help = f"{text}\n\n{block}" if text else block
        if isinstance(cmd, click.Group):
            add_examples(cmd, f"{key} ")
