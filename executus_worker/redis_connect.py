"""One way to build a redis-py client from a URL: plain Redis, Redis Sentinel or Redis Cluster.

``redis://``, ``rediss://``, ``unix://`` go to ``redis.Redis.from_url``. A Sentinel URL names
the sentinels, kombu's way, so the same string works as a Celery broker URL::

    sentinel://[:password@]host1:26379;sentinel://host2:26379/0

with the master group's name from ``EXECUTUS_SENTINEL_MASTER`` (kombu takes it from the
``master_name`` transport option, which the worker sets from the same setting). The password
in the URL authenticates to the *master* (as kombu does); the sentinels themselves are asked
without one. The client asks the sentinels for the master on every new connection and drops
its connections when a server answers as a replica (redis-py's ``SentinelConnectionPool``), so
after a failover the next command goes to the new master.

A Redis Cluster (run state only: Celery cannot use one as its broker) is named by seed nodes::

    redis+cluster://[user:password@]host1:6379[,host2:6379,...]      rediss+cluster:// for TLS

Any one reachable seed is enough: redis-py asks it for the slot map and routes every command to
the master of its key's slot, following MOVED/ASK redirects. A cluster has no databases, so
the URL takes no /db.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, NodesManager, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
DEFAULT_REDIS_PORT = 6379

# What holds run state: one Redis (plain or found through Sentinel) or a Redis Cluster.
StateClient = redis.Redis | RedisCluster


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """The seed nodes and credentials of a ``redis+cluster://`` URL.

    ``ValueError`` names the part that is wrong (never the password).
    """
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r}, expected one of {sorted(CLUSTER_SCHEMES)}")
    if parts.query or parts.fragment:
        raise ValueError("a cluster URL takes no ?query or #fragment")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has no databases: drop the /db from the URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if credentials:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) if user and colon else None
        password = unquote(secret) if colon else unquote(user)
    nodes: list[tuple[str, int]] = []
    for index, node in enumerate(h.strip() for h in hosts.split(",")):
        where = f"cluster node {index + 1}"
        if node.startswith("["):  # [IPv6]:port
            host, _, rest = node[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = node.partition(":")
        port = port or str(DEFAULT_REDIS_PORT)
        if not host:
            raise ValueError(f"{where}: no host")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{where}: the port is not a number in 1..65535")
        nodes.append((host, int(port)))
    return ClusterURL(tuple(nodes), parts.scheme == "rediss+cluster", username, password)


@dataclass(frozen=True)
class SentinelURL:
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, database and master credentials of a ``sentinel://`` URL.

    ``ValueError`` names the part that is wrong (never the password).
    """
    hosts: list[tuple[str, int]] = []
    db = 0
    username = password = None
    for index, part in enumerate(p for p in url.split(";") if p.strip()):
        where = f"sentinel {index + 1}"
        parts = urlsplit(part.strip())
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"{where}: scheme {parts.scheme!r}, expected 'sentinel'")
        if parts.query or parts.fragment:
            raise ValueError(f"{where}: a sentinel URL takes no ?query or #fragment")
        try:
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{where}: the port is not a number in 1..65535") from None
        if not parts.hostname:
            raise ValueError(f"{where}: no host")
        hosts.append((parts.hostname, port))
        if parts.password is not None:
            password = unquote(parts.password)
            username = unquote(parts.username) if parts.username else None
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"{where}: database {path!r} is not a number")
            db = int(path)
    if not hosts:
        raise ValueError("no sentinel host in the URL")
    return SentinelURL(tuple(hosts), db, username, password)


class _NodesManager(NodesManager):
    """redis-py's, except that a slot map it cannot read (every node unreachable) is a
    ``redis.ConnectionError``, as an unreachable single Redis is, rather than a bare
    ``RedisClusterException``: every caller treats RedisError as an outage to ride through."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError(str(exc)) from exc


def connect_cluster(url: str, **options: Any) -> RedisCluster:
    """A cluster client for a ``redis+cluster://`` URL; ``options`` go to every connection.

    Unlike ``redis.Redis``, a cluster client reads the slot map when it is built: with no seed
    reachable that raises ``redis.ConnectionError``.
    """
    spec = parse_cluster_url(url)
    nodes = [ClusterNode(host, port) for host, port in spec.nodes]  # type: ignore[no-untyped-call]
    try:
        client = RedisCluster(
            startup_nodes=nodes,
            username=spec.username,
            password=spec.password,
            ssl=spec.tls,
            **options,
        )
    except RedisClusterException as exc:
        raise redis.ConnectionError(str(exc)) from exc
    # Later re-reads of the slot map (after a failover or a resharding) go through ours.
    client.nodes_manager.__class__ = _NodesManager
    return client


def connect_state(url: str, *, sentinel_master: str | None = None, **options: Any) -> StateClient:
    """The client for run state: ``connect``, or a cluster client for a cluster URL."""
    if is_cluster(url):
        return connect_cluster(url, **options)
    return connect(url, sentinel_master=sentinel_master, **options)


def connect(url: str, *, sentinel_master: str | None = None, **options: Any) -> redis.Redis:
    """A client for ``url``; ``options`` (timeouts, health checks) go to every connection.

    A ``sentinel://`` URL needs ``sentinel_master``; the sentinels are asked with the same
    timeouts, so a dead sentinel costs at most one connect timeout before the next is tried.
    A cluster URL is refused here: use ``connect_state`` where run state may be on a cluster.
    """
    if is_cluster(url):
        raise ValueError("a Redis Cluster can hold run state only (EXECUTUS_REDIS_URL)")
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    if not sentinel_master:
        raise ValueError("a sentinel:// URL needs the master's name (EXECUTUS_SENTINEL_MASTER)")
    spec = parse_sentinel_url(url)
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}
    # redis-py's sentinel module has no annotations.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(spec.hosts), sentinel_kwargs=timeouts, **timeouts
    )
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master,
        redis_class=redis.Redis,
        db=spec.db,
        username=spec.username,
        password=spec.password,
        **options,
    )
    return master
