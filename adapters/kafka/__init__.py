"""Kafka between the stages of the distributed mode.

- `accounting_topic.AccountingTopic`: the RADIUS adapter's sink; a record is acknowledged to
  the BNG only after the broker acknowledged it (acks=all, idempotent producer).
- `rater.Rater`: consumer group over the accounting topic; applies records to the ledger and
  records each partition's offset in the same transaction.
- `relay.LedgerRelay`: publishes the ledger's notification log, in order, to the ledger topic.
- `projector.TopicProjector`: builds the read models from the ledger topic.
"""

from .topics import Topics, ensure_topics

__all__ = ["Topics", "ensure_topics"]
