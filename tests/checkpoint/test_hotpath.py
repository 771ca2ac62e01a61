"""The hand-packed script path on a kept connection (checkpoint/hotpath.py), on a real Redis."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import pytest
import redis
from redis.connection import Encoder

from executus_worker.checkpoint import hotpath
from executus_worker.embedded import free_port

ECHO = "return ARGV"
SLOW = "local t = redis.call('TIME'); local s = t[1] + t[2] / 1e6\n" \
       "repeat local n = redis.call('TIME') until n[1] + n[2] / 1e6 - s > tonumber(ARGV[1])\n" \
       "return ARGV[2]"  # fmt: skip


def _call(client: redis.Redis, source: str, *args: object) -> Any:
    sha = client.script_load(source)
    return hotpath.call(client, hotpath.evalsha(sha, [], args))


@pytest.mark.parametrize(
    "value", ["plain", "ünïcode", 0, -7, 2**63, 1.5, 1733000000.123456, b"\x00\xff"]
)
def test_arguments_are_encoded_as_redis_py_encodes_them(value: object) -> None:
    assert hotpath.encode(value) == Encoder("utf-8", "strict", False).encode(value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_values_redis_py_refuses_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        hotpath.encode(value)


def test_packed_command_round_trips_keys_and_arguments(redis_client: redis.Redis) -> None:
    sha = redis_client.script_load("return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]}")
    payload = hotpath.evalsha(sha, ["k:{a}:1", "k:{a}:2"], ["x" * 70_000, 12, 0.25])
    assert hotpath.call(redis_client, payload) == [
        b"k:{a}:1",
        b"k:{a}:2",
        b"x" * 70_000,
        b"12",
        b"0.25",
    ]


def test_a_thread_keeps_one_connection_and_gives_it_back_when_it_ends(
    redis_client: redis.Redis,
) -> None:
    pool = redis_client.connection_pool
    _call(redis_client, ECHO, "a")
    _call(redis_client, ECHO, "b")
    mine = pool._in_use_connections.copy()  # type: ignore[attr-defined]
    assert len(mine) == 1, "one kept connection for this thread, reused"

    def other() -> None:
        _call(redis_client, ECHO, "c")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    gc.collect()
    assert pool._in_use_connections == mine, "the ended thread's connection went back"  # type: ignore[attr-defined]
    assert len(pool._available_connections) >= 1  # type: ignore[attr-defined]


def test_an_error_reply_leaves_the_connection_usable(redis_client: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="boom"):
        _call(redis_client, "return redis.error_reply('boom')")
    assert _call(redis_client, ECHO, "after") == [b"after"]


def test_unknown_script_raises_noscript(redis_client: redis.Redis) -> None:
    with pytest.raises(redis.exceptions.NoScriptError):
        hotpath.call(redis_client, hotpath.evalsha("0" * 40, [], []))


def _server_closes_the_kept_connection(client: redis.Redis, redis_url: str) -> None:
    assert _call(client, ECHO, "1") == [b"1"]  # the kept connection exists
    admin = redis.Redis.from_url(redis_url)
    try:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        admin.close()


def test_a_connection_the_server_closed_is_replaced_before_the_next_command(
    redis_url: str,
) -> None:
    # No retries: the only thing that can save the next command is the probe before it.
    client = redis.Redis.from_url(redis_url, retry=None)
    try:
        _server_closes_the_kept_connection(client, redis_url)
        assert _call(client, ECHO, "2") == [b"2"]
    finally:
        client.close()


def test_a_reply_cut_short_by_a_timeout_is_never_read_as_the_next_reply(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.1, retry=None)
    try:
        sha = client.script_load(SLOW)
        with pytest.raises(redis.TimeoutError):
            hotpath.call(client, hotpath.evalsha(sha, [], [0.4, "late"]))
        time.sleep(0.5)  # the script has ended: its late reply waits on the old socket
        # The late reply of the first call must not be taken for this one's.
        assert _call(client, ECHO, "next") == [b"next"]
    finally:
        client.close()


def _kept_socket(client: redis.Redis) -> object:
    return hotpath._LOCALS[client.connection_pool].kept.conn._sock


def test_after_a_fork_the_child_uses_its_own_connection(redis_client: redis.Redis) -> None:
    assert _call(redis_client, ECHO, "parent") == [b"parent"]
    parent_sock = _kept_socket(redis_client)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it got, then leave without any cleanup
        try:
            reply = _call(redis_client, ECHO, "child")
            fresh = _kept_socket(redis_client) is not parent_sock
            os.write(write, b"%s %d" % (reply[0], fresh))
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    assert status == 0 and child == b"child 1"
    # ...and the parent's connection is intact: the child never used its socket.
    assert _kept_socket(redis_client) is parent_sock
    assert _call(redis_client, ECHO, "again") == [b"again"]


def test_clients_without_one_pool_are_not_supported() -> None:
    assert not hotpath.supported(object())


def _send(client: redis.Redis, source: str, *args: object) -> hotpath.Pending:
    sha = client.script_load(source)
    return hotpath.send(client, hotpath.evalsha(sha, [], args))


def test_a_sent_command_is_read_later_on_the_kept_connection(redis_client: redis.Redis) -> None:
    pending = _send(redis_client, ECHO, "ahead")
    assert pending.read() == [b"ahead"]
    assert pending.read() == [b"ahead"], "read once from the wire, kept after"
    assert _call(redis_client, ECHO, "next") == [b"next"]


def test_a_command_after_a_send_reads_the_sent_reply_first_and_keeps_it(
    redis_client: redis.Redis,
) -> None:
    pending = _send(redis_client, ECHO, "first")
    # The next command on the same connection must get its own reply, not the pending one.
    assert _call(redis_client, ECHO, "second") == [b"second"]
    assert pending.read() == [b"first"]
    later = _send(redis_client, ECHO, "third")
    newer = _send(redis_client, ECHO, "fourth")
    assert newer.read() == [b"fourth"] and later.read() == [b"third"]


def test_a_sent_command_s_error_reply_raises_on_read_and_leaves_the_connection_usable(
    redis_client: redis.Redis,
) -> None:
    pending = hotpath.send(redis_client, hotpath.evalsha("0" * 40, [], []))
    with pytest.raises(redis.exceptions.NoScriptError):
        pending.read()
    assert _call(redis_client, ECHO, "after") == [b"after"]


def test_a_sent_command_whose_reply_times_out_never_leaves_it_for_the_next(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.1, retry=None)
    try:
        pending = _send(client, SLOW, 0.4, "late")
        with pytest.raises(redis.TimeoutError):
            pending.read()
        time.sleep(0.5)  # the late reply waits on the old socket, which was dropped
        assert _call(client, ECHO, "next") == [b"next"]
    finally:
        client.close()


def test_a_send_to_an_unreachable_server_raises_at_once() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None)
    with pytest.raises(redis.ConnectionError):
        hotpath.send(client, hotpath.evalsha("0" * 40, [], []))


def test_a_send_on_a_connection_the_server_closed_fails_at_read_and_the_next_call_works(
    redis_url: str,
) -> None:
    # send skips the probe: the failure shows at read, and the caller falls back to a call.
    client = redis.Redis.from_url(redis_url, retry=None)
    try:
        _server_closes_the_kept_connection(client, redis_url)
        time.sleep(0.05)
        sha = client.script_load(ECHO)  # on a pool connection of its own, not the kept one
        try:
            pending = hotpath.send(client, hotpath.evalsha(sha, [], ["lost"]))
        except redis.ConnectionError:
            pass  # refused at once: as good
        else:
            with pytest.raises(redis.ConnectionError):
                pending.read()
        assert _call(client, ECHO, "2") == [b"2"]
    finally:
        client.close()
