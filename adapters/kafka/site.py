"""The site controller of a distributed site (PostgreSQL + Kafka), hosted by `wispgate relay`.

The embedded `SiteController` (adapters.shipping) keeps one `serve` process in line with the
durable site record. A distributed site is several processes, so the same decisions take
effect through the database:

- the record's role is read by every rater batch under the site's write lock (a PostgreSQL
  advisory lock, adapters.site_gate.SiteWriteLock): raters rate only while the site is active;
  the controller holds the lock exclusively while it changes the role or sets a tail aside;
- `radius` nodes poll the record and answer only while active; `api` nodes refuse writes (503);
- standby: the controller pulls the active's log into PostgreSQL (same ids and bytes) and the
  relay publishes it to this site's ledger topic, so its projectors keep the read models warm;
- fenced: the divergent tail is set aside and, in the same transaction, the relay is rewound to
  publish the whole log again as a new *generation* of the ledger topic (projectors rebuild on
  seeing it and ignore older generations, whose ids after the common prefix meant other
  events). The raw records to re-submit are read back from the accounting topic: from each
  partition's rater offset at the last checkpoint within the common prefix (checkpoints are
  taken every second while active) to the topic's end, noted durably per partition.

One controller per site: among several relays, the one holding the controller's advisory lock.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ..event_log import SiteRecord, resubmission_plan
from ..shipping import LEDGER_FOLLOWERS, SiteController, common_prefix, drain_chain, forget_cached_aggregates
from ..site_gate import Leadership, SiteWriteLock
from .accounting_topic import decode_message
from .rater import upstream_name
from .relay import rewind_relay
from .topics import Topics

log = logging.getLogger(__name__)

CONTROLLER_LOCK = 0x77676374  # advisory lock key ("wgct"): one site controller per site
CHECKPOINT_EVERY = 1.0  # seconds between rater-offset checkpoints while active
# RADIUS nodes re-read the site record this often; a fence waits a few of these before it
# notes the accounting topic's end, so records acknowledged just before they stopped are in it.
RADIUS_POLL = 0.5
RESUBMIT_BATCH = 500


class DistributedSiteController(SiteController):
    """SiteController for the processes of a distributed site."""

    def __init__(self, runtime: Any, topics: Topics, *, interval: float = 0.2) -> None:
        self.topics = topics
        self.lock = SiteWriteLock(runtime.settings.database_url)
        self.leadership = Leadership(runtime.settings.database_url, CONTROLLER_LOCK)
        self.last_checkpoint = 0.0
        # Until this process leads, its chainer stays idle (the leader's chains).
        runtime.gate.writes_open = False
        super().__init__(runtime, interval=interval)

    def _start_role(self) -> None:
        self.active = None  # taken at the first tick, once this process leads

    def tick(self) -> bool:
        if not self.leadership.held():
            if self.active is not None:
                log.warning("lost the site controller lock; another relay's controller leads")
                self.runtime.gate.writes_open = False
                self.active = None
            return False
        busy = super().tick()
        if self.active and time.monotonic() - self.last_checkpoint >= CHECKPOINT_EVERY:
            self.last_checkpoint = time.monotonic()
            self.store.take_checkpoint(self.topics.accounting)
        return busy

    def stop(self) -> None:
        super().stop()
        self.lock.close()
        self.leadership.release()

    # ---- role ---------------------------------------------------------------------------------

    def _apply_role(self, record: SiteRecord) -> None:
        gate = self.runtime.gate
        with self.lock.exclusive(), gate.exclusive():
            if record.active:
                self.store.sync_sequence()
                forget_cached_aggregates(self.runtime.ledger)
                if record.resubmit_from:
                    # Promoted before the re-submission reached the old active site: rate what
                    # is left of it here (records already in the log are recognised by content).
                    pending = self.store.resubmission_pending()
                    with self.store.engine.begin() as conn:
                        for partition, (next_offset, _end) in pending.items():
                            self.store.set_tracking(conn, upstream_name(self.topics.accounting, partition),
                                                    next_offset)
                        self.store.clear_resubmission(conn)
                gate.writes_open = True
            else:
                gate.writes_open = False
                drain_chain(self.store)
            self.store.note_serving(record.role, record.epoch)
        self.active = record.active
        level = logging.INFO if record.reason == "configured" else logging.WARNING
        log.log(level, "site %s is %s (epoch %d): %s", record.name, record.role, record.epoch, record.reason)

    # ---- fencing ------------------------------------------------------------------------------

    def _fence_divergent_tail(self, record: SiteRecord) -> None:
        assert self.peer is not None
        common = common_prefix(self.store, self.peer)
        starts = self.store.checkpoint_at_or_before(common)
        time.sleep(3 * RADIUS_POLL)  # RADIUS nodes have seen the standby record by now
        ends = self._end_offsets()
        plan = {p: (min(starts.get(p, 0), end), end) for p, end in ends.items()}
        plan = {p: span for p, span in plan.items() if span[0] < span[1]}

        def rewind(conn: Any) -> None:
            generation = rewind_relay(conn, self.topics.ledger)
            log.warning("ledger topic %s: publishing the log again as generation %d", self.topics.ledger, generation)
            for partition, end in ends.items():
                # This site's raters must never rate these records here later (after a
                # failback): they are re-submitted to the active site.
                self.store.set_tracking(conn, upstream_name(self.topics.accounting, partition), end)
            conn.execute(resubmission_plan.delete())
            if plan:
                conn.execute(resubmission_plan.insert(), [
                    {"partition": p, "next_offset": start, "end_offset": end} for p, (start, end) in plan.items()])

        with self.lock.exclusive(), self.runtime.gate.exclusive():
            aside = self.store.set_aside_after(common, record.epoch, resubmit_from=1 if plan else 0,
                                               followers=LEDGER_FOLLOWERS, also=rewind)
            forget_cached_aggregates(self.runtime.ledger)
        log.error("set %d divergent events after position %d aside (audit_divergent_events); re-submitting "
                  "%d raw records from the accounting topic", len(aside), common,
                  sum(end - start for start, end in plan.values()))

    def _consumer(self) -> Any:
        return KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="wispgate-site-controller",
                             request_timeout_ms=30000)

    def _end_offsets(self) -> dict[int, int]:
        consumer = self._consumer()
        try:
            partitions = consumer.partitions_for_topic(self.topics.accounting) or set()
            tps = [TopicPartition(self.topics.accounting, p) for p in sorted(partitions)]
            return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def _resubmit(self, start: int) -> None:
        """Send the accounting topic's records of the plan to the active site, partition by
        partition, noting progress durably after every batch the peer accepted."""
        assert self.peer is not None
        plan = self.store.resubmission_pending()
        sent = 0
        consumer = self._consumer()
        try:
            for partition, (next_offset, end) in sorted(plan.items()):
                tp = TopicPartition(self.topics.accounting, partition)
                consumer.assign([tp])
                consumer.seek(tp, next_offset)
                position = next_offset
                while position < end:
                    polled = consumer.poll(timeout_ms=1000, max_records=RESUBMIT_BATCH).get(tp, [])
                    messages = [m for m in polled if m.offset < end]
                    if not messages:
                        if consumer.position(tp) >= end:
                            break  # the rest is gone (retention): nothing more to send
                        continue
                    records = []
                    for message in messages:
                        try:
                            records += [record.to_dict() for record in decode_message(message.value)]
                        except (ValueError, TypeError, KeyError):
                            log.error("not re-submitting undecodable message at offset %d", message.offset)
                    # A message holds a whole committed batch: re-submitted in pieces of at most
                    # RESUBMIT_BATCH records (a crash half-way re-sends some; the peer stores a
                    # record once, by its content key).
                    for start_at in range(0, len(records), RESUBMIT_BATCH):
                        self.peer.resubmit(records[start_at:start_at + RESUBMIT_BATCH])
                    sent += len(records)
                    position = messages[-1].offset + 1
                    self.store.resubmitted_upto(partition, position)
        finally:
            consumer.close()
        self.store.clear_resubmission()
        log.warning("re-submitted %d raw accounting records to the active site", sent)
