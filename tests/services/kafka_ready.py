"""Readiness probe for the test Kafka broker, used by ensure.sh.

usage: python kafka_ready.py BOOTSTRAP TIMEOUT_SECONDS
exit 0: the broker answers metadata requests and reports at least one live broker
exit 1: not ready before the timeout (last error on stderr)
exit 3: kafka-python is not importable by this interpreter (ensure.sh then uses the Java probe)
"""

import contextlib
import logging
import sys
import time

try:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError
except ImportError:
    sys.exit(3)


def main() -> int:
    bootstrap, timeout = sys.argv[1], float(sys.argv[2])
    logging.basicConfig(level=logging.CRITICAL)
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while time.monotonic() < deadline:
        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="wispgate-ensure",
                request_timeout_ms=10000,
            )
            brokers = admin.describe_cluster().get("brokers") or []
            if not brokers:
                raise RuntimeError("describe_cluster reported no live broker")
            admin.list_topics()
            return 0
        except (KafkaConfigurationError, TypeError) as exc:
            print(f"kafka readiness probe is broken: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 - any other failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()
        time.sleep(1)
    print(f"kafka at {bootstrap} not ready after {timeout:.0f}s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
