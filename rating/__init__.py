"""Pure, deterministic pricing: usage + plan terms -> charges. No I/O, no clock."""

from .billing import prorate, tax_on
from .tariff import STANDARD, ChargeLine, DataPack, Fragment, MeterState, Rated, rate_fragment, split_usage
from .usage import Charge, UsageDelta, counter_delta, price, rate_usage, split_by_hour

__all__ = [
    "STANDARD", "Charge", "ChargeLine", "DataPack", "Fragment", "MeterState", "Rated", "UsageDelta",
    "counter_delta", "price", "prorate", "rate_fragment", "rate_usage", "split_by_hour", "split_usage", "tax_on",
]
