"""``named_id`` is ``uuid5`` in the project's namespace, without UUID.__init__'s checks: the
same UUID (value, version, variant, text, hash, pickling) for any name."""

from __future__ import annotations

import pickle
import uuid

from hypothesis import given
from hypothesis import strategies as st

from domain.ids import NAMESPACE
from ledger.billing_period import BillingPeriod
from ledger.invoice import invoice_id
from ledger.named_ids import named_id


@given(st.text(max_size=200))
def test_named_id_is_uuid5_in_the_namespace(name: str) -> None:
    made, reference = named_id(name), uuid.uuid5(NAMESPACE, name)
    assert made == reference
    assert (made.int, made.version, made.variant, made.is_safe) == \
        (reference.int, reference.version, reference.variant, reference.is_safe)
    assert (str(made), repr(made), hash(made)) == (str(reference), repr(reference), hash(reference))
    assert pickle.loads(pickle.dumps(made)) == reference


@given(st.uuids(), st.integers(min_value=0, max_value=2**40), st.sampled_from(["2026-01", "2026-10", "1999-12"]))
def test_invoice_and_billing_period_ids_are_unchanged(account_id: uuid.UUID, start: int, period: str) -> None:
    assert invoice_id(account_id, period) == uuid.uuid5(NAMESPACE, f"invoice:{account_id}:{period}")
    assert BillingPeriod.create_id(account_id, start) == uuid.uuid5(NAMESPACE, f"billing-period:{account_id}:{start}")
