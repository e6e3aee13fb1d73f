"""The wispgate-owned tables beside the ledger's event store (chain, site record), opened once
per runtime."""

from __future__ import annotations

import threading

from adapters.event_log import LedgerStore

from .bootstrap import Runtime

_lock = threading.Lock()


def ledger_store(runtime: Runtime) -> LedgerStore:
    with _lock:
        store = runtime.__dict__.get("_ledger_store")
        if not isinstance(store, LedgerStore):
            store = LedgerStore.open(data_dir=runtime.settings.data_dir, database_url=runtime.settings.database_url)
            runtime.__dict__["_ledger_store"] = store
        return store
