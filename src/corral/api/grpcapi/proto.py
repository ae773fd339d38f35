"""The Python code of ``scheduler.proto``, generated with grpcio-tools when it is first imported.

Nothing generated is committed: the server compiles its own ``.proto`` (next to this module) into a
private temporary directory, loads the ``scheduler_pb2`` module from it and removes the directory. It takes
a few tens of milliseconds, once per process, and only in a server started with ``--grpc-port``. The
service's handlers are built from the file's service descriptor (``handlers`` in service.py), so only the
messages are generated, not the ``_pb2_grpc`` stubs.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("scheduler.proto")
MODULE = "corral_scheduler_pb2"  # where the generated module is registered in sys.modules


def compile_proto(proto: Path, out: Path) -> Path:
    """Run protoc (from grpcio-tools) on ``proto`` into ``out``; returns the generated ``_pb2.py``."""
    from grpc_tools import protoc
    include = Path(protoc.__file__).parent / "_proto"  # the well-known types shipped with grpcio-tools
    code = protoc.main(["protoc", f"-I{proto.parent}", f"-I{include}", f"--python_out={out}", str(proto)])
    if code != 0:
        raise RuntimeError(f"protoc failed on {proto} (exit {code})")
    return out / (proto.stem.replace("-", "_").replace(".", "_") + "_pb2.py")


@cache
def pb2() -> ModuleType:
    """The generated messages of scheduler.proto (compiled once per process)."""
    with tempfile.TemporaryDirectory(prefix="corral-grpc-") as tmp:
        path = compile_proto(PROTO, Path(tmp))
        spec = importlib.util.spec_from_file_location(MODULE, path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
    return module
