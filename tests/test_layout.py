"""The package's shape: folders by process role and layer, imports that run one way.

Every import of a gunicorn_barrel module by another (at module level or inside a
function) is read from the source. A module may import modules of its own layer
or of lower layers, never of a higher one, and the import graph has no cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gunicorn_barrel"

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    # protocols and records, sans-io or nearly: import nothing above them
    ("gunicorn_barrel.ws", "gunicorn_barrel.config", "gunicorn_barrel.runtime", "gunicorn_barrel.metrics",
     "gunicorn_barrel.bus.wire", "gunicorn_barrel.bus.sequencing", "gunicorn_barrel.bus.channels",
     "gunicorn_barrel.bus.redis.replay", "gunicorn_barrel.bus.redis.outbox",
     "gunicorn_barrel.bus.redis.layout", "gunicorn_barrel.federation.linkstate"),
    # transports: the bus backends and the federation of broadcasters
    ("gunicorn_barrel.bus", "gunicorn_barrel.federation"),
    # what an app uses: the store, socket.io glue, named events
    ("gunicorn_barrel.store", "gunicorn_barrel.sio", "gunicorn_barrel.events"),
    # the arbiter process: hooks and side-process supervision
    ("gunicorn_barrel.arbiter",),
    # patches of other libraries' internals
    ("gunicorn_barrel.compat",),
    # the worker process
    ("gunicorn_barrel.worker",),
    # public entry points
    ("gunicorn_barrel", "gunicorn_barrel.hooks", "gunicorn_barrel.workers", "gunicorn_barrel.cli"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best >= 0, f"{module} is in no layer: add its folder to LAYERS"
    return best


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from pkg import mod`` counts as mod)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if not name.startswith("gunicorn_barrel"):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        # A package's own __init__ is not an edge: `from gunicorn_barrel.bus import wire`
        # names the package on its way to the module.
        graph[name] = {m for m in imports_of(path, modules) if m != name and not name.startswith(m + ".")}
    return graph


def test_every_module_is_in_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{importer} ({layer_of(importer)}) imports {imported} ({layer_of(imported)})"
              for importer, targets in import_graph().items() for imported in targets
              if layer_of(imported) > layer_of(importer)]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_websocket_protocol_imports_nothing_else_of_the_package() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("gunicorn_barrel.ws"):
            assert {t for t in targets if not t.startswith("gunicorn_barrel.ws")} == set(), module


def test_a_config_file_imports_no_gevent_zeromq_or_msgpack_into_the_arbiter() -> None:
    code = ("import sys; from gunicorn_barrel import hooks, workers; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'gevent', 'zmq', 'msgpack', 'engineio', 'socketio', 'redis'}))")
    # `workers` only when gunicorn loads the worker class; a config file imports `hooks`.
    done = subprocess.run([sys.executable, "-c", code.replace(", workers", "")],
                          capture_output=True, text=True, timeout=60, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_broadcaster_imports_no_asyncio_ssl_gevent_or_socketio() -> None:
    # What a side process imports is memory it holds for its whole life
    # (zmq.utils.monitor alone pulls asyncio and ssl: about 8 MB).
    code = ("import sys; import gunicorn_barrel.bus.zeromq.broadcaster; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'asyncio', 'ssl', 'gevent', 'engineio', 'socketio', 'redis', 'prometheus_client'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from gunicorn_barrel.worker import routing\n")
    found = imports_of(source, {"gunicorn_barrel.worker", "gunicorn_barrel.worker.routing"})
    assert "gunicorn_barrel.worker.routing" in found
    assert layer_of("gunicorn_barrel.worker.routing") > layer_of("gunicorn_barrel.ws.frames")
