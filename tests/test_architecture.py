"""The dependency rule and "nothing at import", checked on the code itself.

Import rules are read from the AST (every import statement, including function-level and
TYPE_CHECKING ones), so a lazy import cannot sneak a forbidden dependency in. Side effects are
checked by importing every module in a fresh interpreter with threads, sockets, signal handlers
and EXECUTUS_* environment reads instrumented.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "executus_worker"
PKG = "executus_worker"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
QUEUE_LIBS = {"celery", "kombu", "redis", "billiard", "amqp", "vine"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    nodes = ast.walk(ast.parse(path.read_text(), str(path)))
    return _named_by(nodes, name or module_name(path), path)


def _named_by(nodes: Iterable[ast.AST], name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours = package_modules()
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import sub`` may name a submodule: record it when it is one of ours.
            found.update(
                f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in ours
            )
    return found


def _top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


def violations(subpackage: str, allowed_ours: set[str], allowed_third: set[str]) -> list[str]:
    bad = []
    for name, path in package_modules().items():
        if not _within(name, {f"{PKG}.{subpackage}"}):
            continue
        for imported in sorted(imports_of(path)):
            top = _top(imported)
            if top == PKG:
                if imported != PKG and not _within(imported, allowed_ours):
                    bad.append(f"{name} imports {imported}")
            elif top not in STDLIB and top not in allowed_third:
                bad.append(f"{name} imports third-party {imported}")
    return bad


def third_party_violations(subpackage: str, forbidden: set[str]) -> list[str]:
    return [
        f"{name} imports {imported}"
        for name, path in package_modules().items()
        if _within(name, {f"{PKG}.{subpackage}"})
        for imported in sorted(imports_of(path))
        if _top(imported) in forbidden
    ]


CORE = f"{PKG}.core"
# redis_connect: how a URL becomes a client (settings validates sentinel:// URLs with it).
BASE = {CORE, f"{PKG}.errors", f"{PKG}.settings", f"{PKG}.redis_connect"}


def test_core_imports_only_stdlib_pydantic_and_itself() -> None:
    assert violations("core", {CORE, f"{PKG}.errors"}, {"pydantic"}) == []


@pytest.mark.parametrize(
    ("subpackage", "extra_third"),
    [("checkpoint", {"redis"}), ("critic", set()), ("batteries", set())],
)
def test_checkpoint_critic_batteries_depend_on_core_only(
    subpackage: str, extra_third: set[str]
) -> None:
    allowed_ours = BASE | {f"{PKG}.{subpackage}"}
    internal = [v for v in violations(subpackage, allowed_ours, set()) if "third-party" not in v]
    assert internal == []
    assert third_party_violations(subpackage, QUEUE_LIBS - extra_third) == []


def test_observability_sees_the_core_ports_never_the_worker_or_celery() -> None:
    """The worker feeds metrics and logs through ports; they never reach back into it."""
    allowed_ours = BASE | {f"{PKG}.observability"}
    found = violations("observability", allowed_ours, set())
    assert [v for v in found if "third-party" not in v] == []
    assert third_party_violations("observability", {"celery", "kombu", "billiard"}) == []


def closure(start: str) -> set[str]:
    """The package modules ``start`` reaches through imports (parents count: importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    modules = package_modules()
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        for imported in imports_of(modules[name]):
            parts = imported.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return seen


def test_client_never_reaches_worker_or_batteries() -> None:
    if f"{PKG}.client" not in package_modules():
        pytest.skip("client.py not written yet")
    reached = closure(f"{PKG}.client")
    assert not {m for m in reached if _within(m, {f"{PKG}.worker", f"{PKG}.batteries"})}


def test_the_api_goes_through_the_client_only() -> None:
    """The HTTP API reaches neither the worker nor the batteries, and only ``cli`` imports it."""
    api = f"{PKG}.api"
    reached = set().union(*(closure(name) for name in package_modules() if _within(name, {api})))
    assert not {m for m in reached if _within(m, {f"{PKG}.worker", f"{PKG}.batteries"})}
    importers = [
        f"{name} imports {imported}"
        for name, path in package_modules().items()
        if not _within(name, {api, f"{PKG}.cli"})
        for imported in sorted(imports_of(path))
        if _within(imported, {api})
    ]
    assert importers == []


def test_only_the_api_speaks_http() -> None:
    web = {"fastapi", "starlette", "uvicorn", "anyio"}
    offenders = [
        f"{name} imports {imported}"
        for name, path in package_modules().items()
        if not _within(name, {f"{PKG}.api"})
        for imported in sorted(imports_of(path))
        if _top(imported) in web
    ]
    assert offenders == []


def test_the_package_never_imports_beat() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in package_modules().items()
        for imported in imports_of(path)
        if _top(imported) == "beat"
    ]
    assert offenders == []


def test_the_rules_see_relative_and_lazy_imports(tmp_path: Path) -> None:
    """Guard the checker itself: a function-level relative import is still an import."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..worker import runs\n    import celery\n")
    found = imports_of(probe, name=f"{PKG}.core.probe")
    assert {f"{PKG}.worker", "celery"} <= found


def test_errors_is_a_leaf_so_every_layer_can_raise_its_errors() -> None:
    ours = {m for m in imports_of(PACKAGE / "errors.py") if _top(m) == PKG}
    assert ours == set()


def module_level_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports when it is imported: top-level statements only,
    ``if TYPE_CHECKING:`` blocks and function bodies left out (they do not run at import)."""
    statements: list[ast.stmt] = []
    todo = list(ast.parse(path.read_text(), str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            todo += [stmt for handler in node.handlers for stmt in handler.body]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            statements.append(node)
    ours = package_modules()
    name = module_name(path)
    found: set[str] = set()
    for statement in statements:
        named = _named_by([statement], name, path)
        if isinstance(statement, ast.ImportFrom) and len(named) == len(statement.names) + 1:
            # ``from pkg import sub1, sub2``: every name is a submodule; pkg's own names unused.
            named -= {min(named, key=len)}
        found |= named
    # A package's __init__ re-exports its modules; a module importing its own ancestor package
    # is that package being initialised, not a design-level circle.
    return {m for m in found if m in ours and not name.startswith(f"{m}.")}


def test_no_two_modules_import_each_other_at_import_time() -> None:
    graph = {name: module_level_imports(path) for name, path in package_modules().items()}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycles.append([*stack[stack.index(name) :], name])
            return
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_the_command_line_is_one_package_on_top_of_the_stack() -> None:
    """Only ``cli`` speaks click, and nothing below it imports it."""
    cli = f"{PKG}.cli"
    offenders = [
        f"{name} imports {imported}"
        for name, path in package_modules().items()
        if not _within(name, {cli})
        for imported in sorted(imports_of(path))
        if _top(imported) == "click" or _within(imported, {cli})
    ]
    assert offenders == []
    assert not list(PACKAGE.glob("cli_*.py"))
    assert not (PACKAGE / "schedules" / "cli.py").exists()


# -- nothing at import ------------------------------------------------------------------------

PROBE = textwrap.dedent(
    """
    import importlib, json, os, pkgutil, signal, socket, sys, threading, traceback

    ENV_READS, SOCKETS, THREADS, SIGNALS = [], [], [], []

    import importlib.util
    # Frames from the packages under test (or pydantic-settings acting for them) are "ours".
    OURS = ["/pydantic_settings/"] + [
        loc.rstrip("/") + "/"
        for root in sys.argv[1:]
        for loc in importlib.util.find_spec(root).submodule_search_locations
    ]

    def ours():
        stack = traceback.extract_stack()[:-2]
        return [f"{f.filename}:{f.lineno}" for f in stack if any(o in f.filename for o in OURS)]

    def direct_caller_is_ours():
        # Third-party modules may scan the environment while we import them (croniter calls
        # platform.architecture(), which copies os.environ): only our own scans count.
        for frame in reversed(traceback.extract_stack()[:-2]):
            name = frame.filename
            if name == "<string>" or "_collections_abc" in name or name.endswith("/os.py"):
                continue
            return any(o in name for o in OURS)
        return False

    class SpyEnv(type(os.environ)):
        def __getitem__(self, key):
            if str(key).startswith("EXECUTUS_") and direct_caller_is_ours():
                ENV_READS.append((key, ours()))
            return super().__getitem__(key)

        def __iter__(self):
            if direct_caller_is_ours():
                ENV_READS.append(("<scan>", ours()))
            return super().__iter__()

    spy = SpyEnv(os.environ._data, os.environ.encodekey, os.environ.decodekey,
                 os.environ.encodevalue, os.environ.decodevalue)
    os.environ = spy

    class SpySocket(socket.socket):
        def __init__(self, *a, **kw):
            SOCKETS.append(ours() or traceback.format_stack()[-3:-1])
            super().__init__(*a, **kw)

    socket.socket = SpySocket
    start = threading.Thread.start

    def spy_start(self):
        THREADS.append((self.name, traceback.format_stack()[-3:-1]))
        return start(self)

    threading.Thread.start = spy_start
    real_signal = signal.signal

    def spy_signal(sig, handler):
        SIGNALS.append((int(sig), traceback.format_stack()[-3:-1]))
        return real_signal(sig, handler)

    signal.signal = spy_signal
    before = threading.active_count()
    failures, names = [], []
    for root in sys.argv[1:]:
        package = importlib.import_module(root)
        names.append(root)
        for info in pkgutil.walk_packages(package.__path__, root + "."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # running it is its job
            names.append(info.name)
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    print(json.dumps({
        "modules": names, "failures": failures, "env": ENV_READS, "sockets": SOCKETS,
        "threads": THREADS, "signals": SIGNALS,
        "thread_delta": threading.active_count() - before,
    }))
    """
)


def probe_imports(roots: list[str], cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
    # Point every setting somewhere unusable: a module that reads one at import would connect
    # (or fail) here, and the spy sees the read either way.
    env |= {"EXECUTUS_REDIS_URL": "redis://127.0.0.1:9/0", "EXECUTUS_KEY_PREFIX": "spy"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *roots],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def import_report() -> Iterator[dict[str, object]]:
    roots = [PKG] + (["beat"] if (ROOT / "beat" / "__init__.py").exists() else [])
    yield probe_imports(roots, ROOT)


def test_the_import_probe_catches_side_effects(tmp_path: Path) -> None:
    """Guard the probe itself: a module with every forbidden side effect is reported."""
    package = tmp_path / "noisy_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os, signal, socket, threading\n"
        "URL = os.environ.get('EXECUTUS_REDIS_URL')\n"
        "SOCK = socket.socket()\n"
        "threading.Thread(target=lambda: None).start()\n"
        "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
        "import platform; platform.architecture()  # a third-party-style scan: not ours\n"
    )
    report = probe_imports(["noisy_probe_pkg"], tmp_path)
    assert [read[0] for read in report["env"]] == ["EXECUTUS_REDIS_URL"]  # type: ignore[attr-defined]
    assert len(report["sockets"]) == 1  # type: ignore[arg-type]
    assert len(report["threads"]) == 1  # type: ignore[arg-type]
    assert len(report["signals"]) == 1  # type: ignore[arg-type]


def test_every_module_imports_cleanly(import_report: dict[str, object]) -> None:
    assert import_report["failures"] == []
    assert f"{PKG}.core.executor" in import_report["modules"]  # type: ignore[operator]


def test_importing_reads_no_executus_environment(import_report: dict[str, object]) -> None:
    assert import_report["env"] == []


def test_importing_opens_no_socket(import_report: dict[str, object]) -> None:
    assert import_report["sockets"] == []


def test_importing_starts_no_thread_and_installs_no_signal_handler(
    import_report: dict[str, object],
) -> None:
    assert import_report["threads"] == []
    assert import_report["thread_delta"] == 0
    assert import_report["signals"] == []
