"""A queue name whose keys would not share one Cluster slot (one starting with ``}``) is refused by name.

The keys of queue ``q`` carry the hash tag ``{q}``; Redis takes the tag up to the first ``}``, so for a name
starting with ``}`` the tag is empty and each key is hashed whole. On a Cluster every script on such a queue
then failed with CROSSSLOT: a worker serving it reported Redis as unavailable and stopped when its recoverer
crashed (its other queues with it), and an enqueue failed with Redis's bare CROSSSLOT text. On one server the
same name works, as it does for Go asynq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from framework.client.client import Client
from framework.client.options import refusal
from framework.client.sync import SyncClient
from framework.client.values import TaskCall
from framework.errors import ConfigError, InvalidOption
from framework.protocol.keys import Schema, cluster_slot_problem
from framework.settings import Settings
from framework.task import TaskDef
from framework.testing import drain
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from tests.fixtures.cluster import ClusterInfo

ODD = "}odd"


class P(msgspec.Struct, frozen=True):
    n: int = 0


async def _nothing(ctx: Any, p: P) -> None:
    pass


ODD_TASK = TaskDef("names:odd", P, _nothing, queue=ODD)


def _settings(url: str, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=url,
        namespace=namespace,
        data_dir=str(tmp_path / "data"),
        queues={ODD: 1, "ok": 1},
        shutdown_timeout=1.0,
        load_plugins=[],
    )


@pytest.mark.parametrize(
    ("queue", "splits"), [("}odd", True), ("}", True), ("a}b", False), ("{x}", False), ("default", False)]
)
def test_only_a_leading_brace_splits_a_queues_keys(queue: str, splits: bool) -> None:
    assert (cluster_slot_problem(queue) is not None) is splits


async def test_a_worker_serving_such_a_queue_refuses_to_start_on_a_cluster(
    valkey_cluster: ClusterInfo, namespace: str, tmp_path: Path
) -> None:
    worker = Worker(_settings(valkey_cluster.url, namespace, tmp_path), tasks=[ODD_TASK])
    with pytest.raises(ConfigError, match=r"setting queues: queue '\}odd' cannot be used on a Redis Cluster"):
        await worker.start()
    assert worker.processor is None  # nothing left running


async def test_an_enqueue_into_such_a_queue_on_a_cluster_is_refused_naming_the_queue_and_stores_nothing(
    valkey_cluster: ClusterInfo, credis: Redis, namespace: str, tmp_path: Path
) -> None:
    """Refused before anything is sent: a script reaching a key of another slot from Lua fails after its first
    write, which left a task's record without its place in the queue."""
    settings = _settings(valkey_cluster.url, namespace, tmp_path)
    schema = Schema(namespace)
    client = Client(credis, schema=schema, settings=settings, url=valkey_cluster.url)
    refused = r"option queue='\}odd' is invalid: queue '\}odd' cannot be used on a Redis Cluster"
    with pytest.raises(InvalidOption, match=refused):
        await client.enqueue(ODD_TASK, P())
    with pytest.raises(InvalidOption, match=refused):
        await client.enqueue(ODD_TASK, P(), max_retry=1)  # the general path, not the prepared one
    for _ in range(3):  # each task id its own slot: any could have been the one stored
        with pytest.raises(InvalidOption, match=refused):
            await client.enqueue_many([TaskCall(ODD_TASK, P(n)) for n in range(20)])
    with (
        SyncClient(valkey_cluster.url, schema=schema, settings=settings) as sync,
        pytest.raises(InvalidOption, match=refused),
    ):
        sync.enqueue(ODD_TASK, P())
    for node in credis.get_nodes():
        assert await credis.keys(f"{namespace}:{{{ODD}}}*", target_nodes=node) == []


def test_redis_s_refusal_of_such_a_queue_is_explained() -> None:
    """A refusal that still comes (a queue registered by another process: Go's, say) names the cause."""
    assert "cannot be used on a Redis Cluster" in refusal(Exception("CROSSSLOT Keys in request"), ODD)
    assert "cannot be used" not in refusal(Exception("CROSSSLOT Keys in request"), "fine")


async def test_on_one_server_such_a_queue_works(redis: Redis, redis_url: str, namespace: str, tmp_path: Path) -> None:
    settings = _settings(redis_url, namespace, tmp_path)
    client = Client(redis, schema=Schema(namespace), settings=settings, url=redis_url)
    info = await client.enqueue(ODD_TASK, P())
    result = await drain(Worker(settings, tasks=[ODD_TASK], redis=redis))
    assert result.succeeded == [info.id]
