"""Pure, deterministic pricing: usage + plan terms -> charges. No I/O, no clock."""

from .usage import Charge, UsageDelta, counter_delta, rate_usage, split_by_hour

__all__ = ["Charge", "UsageDelta", "counter_delta", "rate_usage", "split_by_hour"]
