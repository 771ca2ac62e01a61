"""Fixtures for the contract suite: senders that know nothing of executus_worker.

- ``celery_only_python``: the Python of a virtualenv holding only ``celery`` and ``redis`` (the
  versions ours resolve to), built once and cached in pytest's cache dir (``.pytest_cache``).
- ``celery_node``: a directory with the ``celery-node`` npm client installed, cached the same
  way; needs ``node`` and ``npm`` (``.ci/run`` installs them).

A sender that cannot be set up skips the test locally and FAILS it under CI=true: a contract
suite that passes because its senders were missing proves nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from e2e.harness import Cluster

CELERY_NODE = "celery-node@0.5.9"


def _unavailable(what: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {what}", pytrace=False)
    pytest.skip(f"contract sender unavailable: {what}")


def plain_env() -> dict[str, str]:
    """An environment with nothing of ours in it: no PYTHONPATH, no EXECUTUS_/CELERY_ vars."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(redis_url, tmp_path)
    yield world
    world.close()


@pytest.fixture(scope="session")
def celery_only_python(pytestconfig: pytest.Config) -> Path:
    # celery[redis], as Celery's docs install it for a Redis broker.
    pins = [f"celery[redis]=={version('celery')}", f"redis=={version('redis')}"]
    key = hashlib.sha256(" ".join([*pins, sys.version]).encode()).hexdigest()[:12]
    assert pytestconfig.cache is not None
    venv = pytestconfig.cache.mkdir("contract") / f"celery-only-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True,
                timeout=300,
            )  # fmt: skip
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 *pins],
                check=True, capture_output=True, timeout=600, env=plain_env(),
            )  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            detail = getattr(exc, "stderr", b"") or b""
            _unavailable(f"cannot build a Celery-only virtualenv: {exc} {detail[-2000:]!r}")
        (venv / ".ready").touch()
    return python


@pytest.fixture(scope="session")
def celery_node(pytestconfig: pytest.Config) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node/npm are not installed (.ci/run installs them)")
    assert pytestconfig.cache is not None
    prefix = pytestconfig.cache.mkdir("contract") / CELERY_NODE.replace("@", "-")
    if not (prefix / ".ready").exists():
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True)
        try:
            subprocess.run(
                ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                 "--loglevel=error", CELERY_NODE],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(prefix, ignore_errors=True)
            detail = getattr(exc, "stderr", b"") or b""
            _unavailable(f"cannot install {CELERY_NODE}: {exc} {detail[-2000:]!r}")
        (prefix / ".ready").touch()
    return prefix / "node_modules"
