"""The demo: the kernel in-process (``inprocess``), then real worker processes (``workers``)."""

from executus_worker.demo.inprocess import run_demo
from executus_worker.demo.workers import run_worker_demo

__all__ = ["run_demo", "run_worker_demo"]
