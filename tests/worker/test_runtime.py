"""The composition root builds once per process and again after a fork."""

from __future__ import annotations

from executus_worker.core.stop import StopToken
from executus_worker.settings import Settings
from executus_worker.worker.runtime import Runtime


def test_the_handler_and_store_are_built_once_per_process() -> None:
    runtime = Runtime(Settings(redis_url="redis://127.0.0.1:1/0"), drain=StopToken())
    handler, store = runtime.handler(), runtime.store()
    assert runtime.handler() is handler and runtime.store() is store


def test_a_forked_process_builds_its_own() -> None:
    runtime = Runtime(Settings(redis_url="redis://127.0.0.1:1/0"), drain=StopToken())
    handler, client = runtime.handler(), runtime.client()
    runtime._pid = -1  # what a prefork child sees: the objects were made by another pid
    assert runtime.handler() is not handler
    assert runtime.client() is not client
