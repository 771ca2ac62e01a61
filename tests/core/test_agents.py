"""The agent registry: built-ins, unknown names, and the explicit, lazy agents file."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from executus_worker.core.agents import AgentRegistry
from executus_worker.core.demo_agents import CounterAgent
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel
from executus_worker.errors import ConfigError, UnknownAgentError

MODULE = "executus_test_agents_pkg"


@pytest.fixture
def agent_module(tmp_path: Path) -> Iterator[Path]:
    """An importable module with good and bad factories, removed from sys.modules after."""
    (tmp_path / f"{MODULE}.py").write_text(
        textwrap.dedent(
            """
            from executus_worker.core.scripted import ScriptedAgent, ScriptedModel

            IMPORTS = []

            def make():
                IMPORTS.append(1)
                return ScriptedAgent("custom.agent", ScriptedModel(["hi"]))

            def explode():
                raise RuntimeError("no API key")

            def not_an_agent():
                return 42

            class Factories:
                nested = staticmethod(make)

            CONSTANT = 7
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop(MODULE, None)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_builtins_are_registered() -> None:
    registry = AgentRegistry.with_builtins()
    assert registry.names() == ["demo.counter", "demo.phased"]
    assert isinstance(registry.get("demo.counter"), CounterAgent)
    assert "demo.phased" in registry


def test_unknown_agent_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAgentError, match=r"'nope'; known agents: demo.counter, demo.phased"):
        AgentRegistry.with_builtins().get("nope")


def test_registering_a_name_twice_is_an_error() -> None:
    registry = AgentRegistry.with_builtins()
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(ScriptedAgent("demo.counter", ScriptedModel([])))


def test_agents_file_entries_are_imported_on_first_use_only(
    agent_module: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, f'[agents]\n"custom.agent" = "{MODULE}:make"\n')
    registry = AgentRegistry.with_builtins(agents_file=path)
    assert registry.names() == ["custom.agent", "demo.counter", "demo.phased"]
    assert MODULE not in sys.modules
    agent = registry.get("custom.agent")
    assert agent.name == "custom.agent"
    assert registry.get("custom.agent") is agent  # built once
    assert sys.modules[MODULE].IMPORTS == [1]


def test_nested_attribute_factories_resolve(agent_module: Path, tmp_path: Path) -> None:
    registry = AgentRegistry()
    registry.load_file(write(tmp_path, f'[agents]\nx = "{MODULE}:Factories.nested"\n'))
    assert registry.get("x").name == "custom.agent"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[agents\n", "not valid TOML"),
        ("[other]\nx = 'a:b'\n", "unknown top-level keys"),
        ("agents = 3\n", r"needs an \[agents\] table"),
        ("[agents]\nx = 3\n", "must map to 'package.module:factory', got 3"),
        ("[agents]\nx = 'no_colon'\n", "must map to 'package.module:factory'"),
        ("[agents]\n'bad name!' = 'a:b'\n", "invalid agent name 'bad name!'"),
        ("[agents]\n'demo.counter' = 'a:b'\n", "'demo.counter' is already registered"),
    ],
)
def test_a_malformed_agents_file_is_rejected_when_loaded(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        AgentRegistry.with_builtins(agents_file=write(tmp_path, body))


def test_a_missing_agents_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read agents file"):
        AgentRegistry().load_file(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:make", "cannot import no_such_module_xyz: ModuleNotFoundError"),
        (f"{MODULE}:absent", f"{MODULE} has no attribute absent"),
        (f"{MODULE}:CONSTANT", "CONSTANT is not callable"),
        (f"{MODULE}:explode", "the factory raised RuntimeError: no API key"),
        (f"{MODULE}:not_an_agent", r"returned 42, not an Agent \(lacks \['phases'"),
    ],
)
def test_a_bad_factory_is_a_config_error_naming_the_entry(
    agent_module: Path, tmp_path: Path, target: str, message: str
) -> None:
    path = write(tmp_path, f'[agents]\n"my.agent" = "{target}"\n')
    registry = AgentRegistry.with_builtins(agents_file=path)
    with pytest.raises(ConfigError, match=message) as info:
        registry.get("my.agent")
    assert "agent 'my.agent'" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError):
        registry.load_all()
