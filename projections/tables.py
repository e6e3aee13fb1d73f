"""Read-model schema (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Amounts are stored as decimal TEXT, never as floating point (SQLite has no exact numeric
type); the projector sums them with Decimal in Python.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

positions = Table(
    "projection_positions", metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

nas = Table(
    "nas", metadata,
    Column("id", String(36), primary_key=True),
    Column("address", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("vendor", String(32), nullable=False),
    Column("require_message_authenticator", Boolean, nullable=False),
    Column("site", Text, nullable=False),
    Column("coa_port", Integer, nullable=False),
    Column("retired", Boolean, nullable=False),
)

plans = Table(
    "plans", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("versions", Text, nullable=False),  # JSON list of {effective_from, terms}
)

accounts = Table(
    "accounts", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("plan_id", String(36), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("usernames", Text, nullable=False),  # JSON list
)

usernames = Table(
    "usernames", metadata,
    Column("username", Text, primary_key=True),
    Column("account_id", String(36), nullable=False),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("hashed", String(64), primary_key=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("account_id", String(36)),
    Column("label", Text, nullable=False),
    Column("revoked", Boolean, nullable=False),
)

balances = Table(
    "balances", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("receivable", Text, nullable=False),  # debit-positive: what the subscriber owes
    Column("updated_at", BigInteger, nullable=False),  # event time of the last change
    Column("position", BigInteger, nullable=False),
)

journal = Table(
    "journal", metadata,
    Column("position", BigInteger, primary_key=True),  # ledger notification id
    Column("line", Integer, primary_key=True),
    Column("transaction_ref", String(80), nullable=False),
    Column("event_time", BigInteger, nullable=False),
    Column("ledger_account", Text, nullable=False),
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
)

payments = Table(
    "payments", metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("received_at", BigInteger, nullable=False),
)

session_aggregates = Table(
    "session_aggregates", metadata,
    Column("id", String(36), primary_key=True),
    Column("nas_id", String(64), nullable=False),
    Column("acct_session_id", Text, nullable=False),
)

sessions = Table(
    "sessions", metadata,
    Column("id", String(64), primary_key=True),  # session aggregate id + ":" + start
    Column("nas_id", String(64), nullable=False),
    Column("acct_session_id", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("account_id", String(36)),
    Column("started_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("stopped_at", BigInteger),
    Column("upload_bytes", BigInteger, nullable=False),
    Column("download_bytes", BigInteger, nullable=False),
    Column("amount", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("framed_ip", String(64), nullable=False),
    Column("nas_ip", String(64), nullable=False),
    Column("calling_station_id", Text, nullable=False),
    Column("terminate_cause", Text, nullable=False),
)
Index("sessions_account", sessions.c.account_id, sessions.c.started_at)

sessions_keyless = Table(  # session rows written before their session's Registered event was projected
    "sessions_keyless", metadata,
    Column("session_id", String(36), primary_key=True),
    Column("row_id", String(64), primary_key=True),
)
Index("sessions_ip", sessions.c.framed_ip, sessions.c.started_at)

usage = Table(
    "usage_buckets", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("granularity", String(4), primary_key=True),  # hour | day
    Column("bucket_start", BigInteger, primary_key=True),
    Column("band", String(64), primary_key=True),  # "standard" or the plan's band name
    Column("upload_bytes", BigInteger, nullable=False),
    Column("download_bytes", BigInteger, nullable=False),
)

invoices = Table(
    "invoices", metadata,
    Column("id", String(36), primary_key=True),
    Column("number", String(64), nullable=False),  # "" while a draft
    Column("series", String(64), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("customer_name", Text, nullable=False),
    Column("period", String(7), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("period_end", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # draft | issued | partially_paid | paid | void
    Column("currency", String(3), nullable=False),
    Column("net", Text, nullable=False),
    Column("tax", Text, nullable=False),
    Column("total", Text, nullable=False),
    Column("paid", Text, nullable=False),  # payments allocated (oldest invoice first)
    Column("credited", Text, nullable=False),  # credit notes
    Column("previous_balance", Text, nullable=False),
    Column("payments_carried", Text, nullable=False),
    Column("amount_due", Text, nullable=False),  # as printed on the invoice
    Column("issued_at", BigInteger),
    Column("due_at", BigInteger),
    Column("position", BigInteger, nullable=False),
)
Index("invoices_period", invoices.c.period, invoices.c.id)
Index("invoices_account", invoices.c.account_id, invoices.c.period_start)
Index("invoices_number", invoices.c.number)

invoice_lines = Table(
    "invoice_lines", metadata,
    Column("invoice_id", String(36), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("description", Text, nullable=False),
    Column("quantity", Text, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("unit_price", Text, nullable=False),
    Column("net", Text, nullable=False),
    Column("tax_rate", Text, nullable=False),
    Column("tax", Text, nullable=False),
    Column("gross", Text, nullable=False),
)

invoice_allocations = Table(
    "invoice_allocations", metadata,
    Column("invoice_id", String(36), primary_key=True),
    Column("source", String(80), primary_key=True),  # payment:<id> | credit-note:<id>
    Column("amount", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)

account_credit = Table(  # payments not yet allocated to an invoice
    "account_credit", metadata,
    Column("account_id", String(36), primary_key=True),
    Column("payment_id", String(80), primary_key=True),
    Column("amount", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)

credit_notes = Table(
    "credit_notes", metadata,
    Column("id", String(36), primary_key=True),
    Column("number", String(64), nullable=False),
    Column("invoice_id", String(36), nullable=False, index=True),
    Column("invoice_number", String(64), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("amount", Text, nullable=False),
    Column("net", Text, nullable=False),
    Column("tax", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
)

READ_MODEL_TABLES = [nas, plans, accounts, usernames, api_tokens, balances, journal, payments,
                     session_aggregates, sessions, usage]
