"""The heartbeat file and the check `executus-worker health` makes of it (no broker)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from executus_worker.observability import sdnotify
from executus_worker.observability.health import HealthBeacon, check


def beacon(tmp_path: Path, now: list[float]) -> HealthBeacon:
    return HealthBeacon(tmp_path / "w.health", interval_s=5, clock=lambda: now[0])


def test_a_fresh_heartbeat_of_a_live_process_is_healthy(tmp_path: Path) -> None:
    now = [1000.0]
    b = beacon(tmp_path, now)
    b.write()
    report = check(b.path, stale_s=30, now=1010.0)
    assert report.healthy and report.state == "starting" and report.pid == os.getpid()


def test_a_heartbeat_older_than_the_stale_limit_is_unhealthy(tmp_path: Path) -> None:
    now = [1000.0]
    b = beacon(tmp_path, now)
    b.write()
    report = check(b.path, stale_s=30, now=1031.0)
    assert not report.healthy and "31.0s old" in report.detail


def test_a_missing_or_garbled_file_is_unhealthy_with_a_reason(tmp_path: Path) -> None:
    missing = check(tmp_path / "nope", stale_s=30)
    assert not missing.healthy and "no heartbeat file" in missing.detail
    garbled = tmp_path / "bad"
    garbled.write_text("{not json")
    assert "unreadable" in check(garbled, stale_s=30).detail
    garbled.write_text(json.dumps({"pid": "x"}))
    assert "lacks" in check(garbled, stale_s=30).detail


def test_a_file_naming_a_dead_pid_on_this_host_is_unhealthy(tmp_path: Path) -> None:
    now = [1000.0]
    b = beacon(tmp_path, now)
    b.write()
    report = check(b.path, stale_s=30, now=1000.0, alive=lambda pid: False)
    assert not report.healthy and "not running" in report.detail


def test_draining_is_alive_but_not_ready(tmp_path: Path) -> None:
    now = [1000.0]
    b = beacon(tmp_path, now)
    b.set_state("draining")
    b.write()
    assert check(b.path, stale_s=30, now=1000.0).healthy
    assert not check(b.path, stale_s=30, now=1000.0, require_ready=True).healthy
    b.set_state("ready")
    b.write()
    assert check(b.path, stale_s=30, now=1000.0, require_ready=True).healthy


def test_the_thread_keeps_the_file_fresh_and_stop_removes_it(tmp_path: Path) -> None:
    b = HealthBeacon(tmp_path / "sub" / "w.health", interval_s=0.05)
    b.start()
    first = json.loads(b.path.read_text())["updated_at"]
    deadline = time.monotonic() + 10
    while json.loads(b.path.read_text())["updated_at"] == first:
        assert time.monotonic() < deadline, "the heartbeat thread never rewrote the file"
        time.sleep(0.02)
    b.stop()
    assert not b.path.exists()


def test_stop_leaves_a_file_another_process_took_over(tmp_path: Path) -> None:
    b = beacon(tmp_path, [1000.0])
    b.path.write_text(json.dumps({"pid": 1, "state": "ready", "updated_at": 1}))
    b.stop()
    assert b.path.exists()


def test_under_systemd_the_beacon_feeds_the_watchdog_and_reports_ready_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        b = HealthBeacon(tmp_path / "w.health", interval_s=0.05)
        b.start()
        try:
            heard = [server.recv(64).decode()]
            b.set_state("ready")
            while "READY=1" not in heard:
                heard.append(server.recv(64).decode())
            b.set_state("draining")
            while "STOPPING=1" not in heard:
                heard.append(server.recv(64).decode())
        finally:
            b.stop()
    assert heard[0] == "WATCHDOG=1"
    assert heard.count("READY=1") == 1 and heard.count("STOPPING=1") == 1


def test_without_systemd_notify_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("WATCHDOG=1") is False
