"""Money: an exact Decimal amount in an ISO 4217 currency, never a float.

Two precisions exist on purpose. Rated charges are carried at RATING_EXPONENT (micro units)
so that usage split at any boundary adds up to the same total as unsplit usage; amounts are
rounded to the currency's minor unit once, when a document (invoice, payment) fixes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor units for the currencies WISPs bill in; anything else must be added here
# explicitly rather than silently assuming two decimals (the JPY-times-100 bug).
MINOR_UNITS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "NZD": 2, "CHF": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2, "RON": 2, "BRL": 2, "MXN": 2, "ARS": 2, "COP": 2,
    "PEN": 2, "ZAR": 2, "KES": 2, "NGN": 2, "INR": 2, "PHP": 2, "IDR": 2, "MYR": 2, "THB": 2,
    "JPY": 0, "KRW": 0, "CLP": 0, "VND": 0, "UGX": 0, "XOF": 0, "XAF": 0, "ISK": 0,
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}

RATING_EXPONENT = Decimal("0.000001")
ROUNDING = ROUND_HALF_EVEN  # banker's rounding: unbiased over many lines


class CurrencyError(ValueError):
    pass


def minor_unit(currency: str) -> Decimal:
    try:
        return Decimal(1).scaleb(-MINOR_UNITS[currency])
    except KeyError:
        raise CurrencyError(f"unsupported currency {currency!r}") from None


def parse_amount(text: str | int | Decimal) -> Decimal:
    """Parse a decimal string from the API; floats are refused on purpose."""
    if isinstance(text, (float, bool)):
        raise ValueError("amounts must be decimal strings, not floats")
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        minor_unit(self.currency)
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise ValueError("Money needs a finite Decimal amount")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def rated(self) -> Money:
        """Quantised to the rating precision (micro units)."""
        return Money(self.amount.quantize(RATING_EXPONENT, rounding=ROUNDING), self.currency)

    def rounded(self) -> Money:
        """Quantised to the currency's minor unit with the ledger's rounding policy."""
        return Money(self.amount.quantize(minor_unit(self.currency), rounding=ROUNDING), self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
