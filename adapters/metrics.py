"""Prometheus metrics of the process (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RADIUS_PACKETS = Counter("wispgate_radius_packets_total", "RADIUS packets received", ["code"])
RADIUS_DROPPED = Counter("wispgate_radius_dropped_total", "RADIUS packets dropped silently", ["reason"])
RADIUS_DUPLICATES = Counter(
    "wispgate_radius_duplicates_total", "Retransmissions answered from the duplicate cache or joined in flight"
)
RADIUS_CONTENT_DUPLICATES = Counter(
    "wispgate_radius_content_duplicates_total", "Records already in the log under their content key"
)
RADIUS_DURABLE = Counter("wispgate_radius_records_durable_total", "Accounting records made durable")
RADIUS_STORE_FAILURES = Counter(
    "wispgate_radius_store_failures_total", "Batches that could not be made durable (no response sent)"
)
RADIUS_RESPONSE_SECONDS = Histogram(
    "wispgate_radius_response_seconds", "Receive to Accounting-Response latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RADIUS_BATCH_SIZE = Histogram(
    "wispgate_radius_batch_records", "Records per durable batch", buckets=(1, 4, 16, 64, 256, 1024)
)
STAGE_POSITION = Gauge("wispgate_stage_position", "Last position a stage has committed", ["stage"])
