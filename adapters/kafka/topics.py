"""Topic names, creation and the client settings every role shares."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import MemberState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """The topics of one deployment, named from its prefix (one prefix per site)."""

    prefix: str

    @property
    def accounting(self) -> str:
        return f"{self.prefix}.accounting"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}.ledger"

    @property
    def rater_group(self) -> str:
        return f"{self.prefix}.rater"

    @property
    def projector_group(self) -> str:
        return f"{self.prefix}.projector"


def producer_config(bootstrap: str, client_id: str) -> dict[str, Any]:
    """Durable production: acks from every in-sync replica, idempotent (no duplicates or
    reordering from the producer's own retries), and bounded waits so an unavailable broker
    turns into an error the caller sees within seconds rather than minutes."""
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "batch_size": 256 * 1024,
        "compression_type": None,
        "request_timeout_ms": 4000,
        "delivery_timeout_ms": 8000,
        "max_block_ms": 4000,
        "retry_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
    }


def consumer_config(bootstrap: str, client_id: str, group_id: str) -> dict[str, Any]:
    """Positions live in the database with the effects, never in Kafka's auto-commit."""
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_wait_ms": 50,
        "session_timeout_ms": 6000,  # the broker's minimum: a killed member is replaced fast
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 120000,
        "reconnect_backoff_max_ms": 1000,
        "request_timeout_ms": 30000,
    }


def ensure_topics(bootstrap: str, wanted: dict[str, int], replication: int, *, timeout: float = 60.0,
                  configs: dict[str, dict[str, str]] | None = None) -> None:
    """Create the topics that are missing (name -> partitions), then wait until every
    partition has a leader. An existing topic keeps its partition count (changing that of the
    accounting topic would move sessions between raters, see docs); its ``configs`` (topic
    name -> settings such as retention.ms) are set on it again, so a changed retention
    setting takes effect at the next start."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _ensure_topics_once(bootstrap, wanted, replication, deadline, configs or {})
            return
        except KafkaError as error:
            # Unreachable, or lost in the middle (a role starting while the broker restarts):
            # wait for the broker rather than exit.
            if time.monotonic() > deadline:
                raise
            log.warning("Kafka at %s not reachable yet (%s); retrying", bootstrap, error)
            time.sleep(1)


def _ensure_topics_once(bootstrap: str, wanted: dict[str, int], replication: int, deadline: float,
                        configs: dict[str, dict[str, str]]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="wispgate-admin", request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, num_partitions=partitions, replication_factor=replication,
                            topic_configs=configs.get(name))
                   for name, partitions in wanted.items() if name not in existing]
        present = {name: configs[name] for name in wanted if name in existing and configs.get(name)}
        if present:
            try:
                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(settings))
                                     for name, settings in present.items()])
            except KafkaError as error:  # e.g. not allowed by the cluster's ACLs: say so, go on
                log.warning("could not set %s on existing topics: %s", present, error)
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=30000)
                log.info("created topics %s", ", ".join(t.name for t in missing))
            except TopicAlreadyExistsError:
                pass  # another role created it meanwhile
        while True:
            described = admin.describe_topics(list(wanted))
            ready = all(
                info.get("error_code", 0) == 0 and info.get("partitions")
                and all(p.get("leader_id", -1) >= 0 for p in info["partitions"])
                for info in described
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(wanted)} have no leader after the wait")
            time.sleep(0.2)
    finally:
        admin.close()


def wait_for_metadata(consumer: Any, topic: str, timeout: float = 60.0) -> None:
    """Load the topic's partitions before joining the group: a group leader that joins
    without them assigns nothing (kafka-python's range assignor), and the group can stall."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if consumer.partitions_for_topic(topic):
                return
        except KafkaError as error:
            # A role starting while the broker restarts: wait for it like for the topic, rather
            # than exit (seen in the broker-restart test: a rater restarted a second before
            # the broker stopped lost its connection here).
            log.warning("waiting for the broker (topic %s metadata): %s", topic, error)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata for topic {topic} after {timeout:.0f} s")
        time.sleep(0.1)


class GroupWatchdog:
    """Notices a consumer stuck in a rebalance. Seen with kafka-python 3.0.12 after a broker
    restart: the group leader's assignment never completes and the consumer spins without
    partitions. A member that is not stable for ``limit`` seconds should be replaced (a new
    consumer rejoins the group; positions come from the database, so nothing is lost)."""

    def __init__(self, limit: float = 60.0) -> None:
        self.limit = limit
        self.unstable_since: float | None = None

    def stalled(self, consumer: Any) -> bool:
        state = getattr(getattr(consumer, "_coordinator", None), "state", MemberState.STABLE)
        if state == MemberState.STABLE:
            self.unstable_since = None
            return False
        now = time.monotonic()
        if self.unstable_since is None:
            self.unstable_since = now
        if now - self.unstable_since < self.limit:
            return False
        self.unstable_since = None
        return True


def replace_consumer(consumer: Any) -> None:
    """Close a wedged consumer without waiting on the group (it may never answer)."""
    try:
        consumer.close(autocommit=False, timeout_ms=2000)
    except Exception:  # a wedged client may fail to close; it is dropped either way
        log.warning("error closing a stalled consumer", exc_info=True)
