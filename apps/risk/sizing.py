"""Position sizing: the amount whose loss at the stop is the chosen risk, never more.

Pure Python (no Django): the runner, the preview API and backtests call :func:`size_position`.

Contract math (Deribit, ``/work/shared/deribit-api.md``):

- Inverse (BTC-PERPETUAL, ETH-PERPETUAL): amount ``A`` in USD; the loss at a stop ``S`` of a
  position entered at ``E`` is ``A·|1/S − 1/E|`` coin; taker fees are ``f·A/E`` (entry) and
  ``f·A/S`` (stop) coin.
- Linear (USDC perpetuals): amount ``q`` in the base coin; the loss is ``q·|E − S|`` USDC; fees are
  ``f·q·E`` and ``f·q·S`` USDC.

The loss is linear in the amount (``loss = amount·k``), so the amount is
``floor(target / k / step)·step``, computed with exact rationals (``fractions.Fraction``): the
loss at the stop never exceeds the target, and one more step would exceed it. Hence the two
guarantees: ``loss ≤ target`` and ``target − loss < k·step`` (within one amount step).

Target risk, in the settlement currency: ``percent`` mode takes ``value`` % of the equity;
``fixed`` mode takes ``value`` USD, converted to the coin at the STOP price for inverse
instruments (that is where the loss is realized: ``USD / S = coin``) and 1:1 for USDC.
USD valuations: inverse ``coin · S`` for risk (``coin · E`` for notional is ``A`` itself);
USDC is taken as USD.

Refusals raise :class:`SizingRefused` (``code``, ``message``, ``field``) rather than returning a
union: a refusal is never a size, and an exception cannot be mistaken for one by a caller that
forgets to check. Every code is a :class:`RefusalCode`.

Leverage above the trader's cap or the instrument's maximum is REFUSED by default, not shrunk:
shrinking silently places a trade whose risk is smaller than what the trader chose. A caller
that prefers the smaller trade passes ``shrink_to_fit=True``: the amount is cut to the largest
step that fits the cap and the funds, and the result carries a ``SHRUNK_TO_FIT`` warning (its
risk is then below the target by more than one step; it still never exceeds it).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation, localcontext
from fractions import Fraction

from apps.brokers.base import InstrumentSpec, Side

RISK_QUANTUM = Decimal("1e-12")  # settlement-currency figures are rounded UP to this
USD_QUANTUM = Decimal("0.01")
LEVERAGE_QUANTUM = Decimal("0.01")

# Thresholds of the warnings.
ROUNDED_DOWN_WARN = Fraction(9, 10)  # real risk below 90 % of the target
FEES_WARN = Fraction(1, 10)  # fees outside the risk above 10 % of it
LEVERAGE_WARN = Fraction(8, 10)  # leverage above 80 % of the cap
LARGE_RISK_PERCENT = Fraction(10)  # target above 10 % of equity


class RiskMode(enum.StrEnum):
    PERCENT = "percent"  # value % of equity
    FIXED = "fixed"  # value USD


class RefusalCode(enum.StrEnum):
    STOP_WRONG_SIDE = "STOP_WRONG_SIDE"
    MIN_AMOUNT_EXCEEDS_RISK = "MIN_AMOUNT_EXCEEDS_RISK"
    LEVERAGE_ABOVE_CAP = "LEVERAGE_ABOVE_CAP"
    LEVERAGE_ABOVE_INSTRUMENT_MAX = "LEVERAGE_ABOVE_INSTRUMENT_MAX"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INVALID_INPUT = "INVALID_INPUT"


class SizingRefused(Exception):
    """The sizer will not size this trade. ``field`` names the input at fault when there is one."""

    def __init__(self, code: RefusalCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class SizingWarning:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SizingResult:
    """What to trade and what it risks. Settlement-currency figures are rounded up (conservative)."""

    instrument: str
    side: Side
    amount: Decimal  # in the instrument's unit: USD (inverse) or base coin (linear)
    risk: Decimal  # loss at the stop, settlement currency (fees included iff include_fees)
    risk_currency: str
    risk_usd: Decimal
    target_risk: Decimal  # what the mode and value asked for, settlement currency
    target_risk_usd: Decimal
    fees: Decimal  # estimated taker fees of entry and stop, settlement currency
    include_fees: bool
    notional: Decimal  # value of the amount at entry, settlement currency
    notional_usd: Decimal
    leverage: Decimal  # notional / equity
    required_margin: Decimal  # notional / instrument max leverage + entry fee
    warnings: tuple[SizingWarning, ...] = ()

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(w.code for w in self.warnings)


def decimal_str(value: Decimal) -> str:
    """A decimal as a plain string without trailing zeros or exponent: 5.00000000 → "5"."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _refuse(code: RefusalCode, message: str, field: str | None = None) -> SizingRefused:
    return SizingRefused(code, message, field=field)


def _exact(name: str, value: object) -> Fraction:
    """``value`` as an exact rational; NaN, infinities and non-numbers are INVALID_INPUT."""
    if isinstance(value, bool):
        raise _refuse(RefusalCode.INVALID_INPUT, f"{name} must be a number", name)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(RefusalCode.INVALID_INPUT, f"{name} must be a finite number", name)
        value = Decimal(repr(value))
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise _refuse(RefusalCode.INVALID_INPUT, f"{name} is not a number", name) from None
    if isinstance(value, int | Fraction):
        return Fraction(value)
    if not isinstance(value, Decimal):
        raise _refuse(RefusalCode.INVALID_INPUT, f"{name} must be a number", name)
    if not value.is_finite():
        raise _refuse(RefusalCode.INVALID_INPUT, f"{name} must be a finite number", name)
    return Fraction(value)


def _positive(name: str, value: object) -> Fraction:
    number = _exact(name, value)
    if number <= 0:
        raise _refuse(RefusalCode.INVALID_INPUT, f"{name} must be positive", name)
    return number


def _up(value: Fraction, quantum: Decimal) -> Decimal:
    """``value`` as a Decimal rounded up (toward +∞) to ``quantum``."""
    with localcontext() as ctx:
        ctx.prec = 80
        ctx.rounding = ROUND_CEILING
        return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(quantum)


def _decimal(value: Fraction) -> Decimal:
    """An exact Decimal of a rational whose denominator divides a power of ten."""
    with localcontext() as ctx:
        ctx.prec = 80
        result = Decimal(value.numerator) / Decimal(value.denominator)
    if Fraction(result) != value:
        raise ValueError(f"{value} has no exact decimal form")
    return result


def _plain(value: Fraction, places: int = 8) -> str:
    return f"{_up(value, Decimal(1).scaleb(-places)).normalize():f}"


def loss_per_unit(
    spec: InstrumentSpec, entry: Fraction, stop: Fraction
) -> tuple[Fraction, Fraction]:
    """(price loss, taker fees) at the stop per unit of amount, settlement currency, exact."""
    fee = Fraction(spec.taker_fee)
    if spec.is_inverse:
        price_loss = abs(1 / stop - 1 / entry)
        fees = fee / entry + fee / stop
    else:
        price_loss = abs(entry - stop)
        fees = fee * entry + fee * stop
    return price_loss, fees


def _notional(spec: InstrumentSpec, amount: Fraction, price: Fraction) -> Fraction:
    return amount / price if spec.is_inverse else amount * price


def _check_spec(spec: InstrumentSpec) -> None:
    for name in ("contract_size", "min_amount", "amount_step", "tick_size", "max_leverage"):
        _positive(f"instrument.{name}", getattr(spec, name))
    if _exact("instrument.taker_fee", spec.taker_fee) < 0:
        raise _refuse(RefusalCode.INVALID_INPUT, "instrument taker fee is negative", "instrument")


_SPEC_NUMBERS = ("amount_step", "min_amount", "max_leverage", "taker_fee", "tick_size")


def _spec_numbers(spec: InstrumentSpec) -> dict[str, Fraction]:
    """The instrument's numbers as exact rationals, checked (``_check_spec``). An
    ``InstrumentSpec`` is immutable, so this is done once per spec, not once per trade."""
    try:
        return _spec_numbers_cached(spec)
    except TypeError:  # a spec holding something unhashable: checked every time
        return _spec_numbers_now(spec)


def _spec_numbers_now(spec: InstrumentSpec) -> dict[str, Fraction]:
    _check_spec(spec)
    return {name: Fraction(getattr(spec, name)) for name in _SPEC_NUMBERS}


_spec_numbers_cached = functools.lru_cache(maxsize=256)(_spec_numbers_now)


def size_position(
    *,
    spec: InstrumentSpec,
    side: Side | str,
    entry: Decimal | int | str,
    stop: Decimal | int | str,
    equity: Decimal | int | str,
    mode: RiskMode | str,
    value: Decimal | int | str,
    leverage_cap: Decimal | int | str,
    available_funds: Decimal | int | str | None = None,
    include_fees: bool = False,
    shrink_to_fit: bool = False,
) -> SizingResult:
    """Size one trade, or raise :class:`SizingRefused`.

    ``equity`` and ``available_funds`` (default: the equity) are in the instrument's settlement
    currency. ``value`` is a percent of equity (``mode="percent"``) or USD (``mode="fixed"``).
    """
    try:
        side = Side(side)
    except ValueError:
        raise _refuse(
            RefusalCode.INVALID_INPUT, f"side must be buy or sell, not {side!r}", "side"
        ) from None
    try:
        mode = RiskMode(mode)
    except ValueError:
        raise _refuse(
            RefusalCode.INVALID_INPUT, f"mode must be percent or fixed, not {mode!r}", "mode"
        ) from None
    numbers = _spec_numbers(spec)
    e = _positive("entry", entry)
    s = _positive("stop", stop)
    eq = _positive("equity", equity)
    v = _positive("value", value)
    cap = _positive("leverage_cap", leverage_cap)
    funds = eq if available_funds is None else _exact("available_funds", available_funds)
    if funds < 0:
        raise _refuse(
            RefusalCode.INVALID_INPUT, "available funds must not be negative", "available_funds"
        )
    if mode is RiskMode.PERCENT and v > 100:
        raise _refuse(
            RefusalCode.INVALID_INPUT, "a percent risk above 100 is not a risk setting", "value"
        )

    if (side is Side.BUY and s >= e) or (side is Side.SELL and s <= e):
        where = "below" if side is Side.BUY else "above"
        raise _refuse(
            RefusalCode.STOP_WRONG_SIDE,
            f"the stop of a {side.value} must be {where} the entry ({_plain(s)} vs {_plain(e)})",
            "stop",
        )

    cur = spec.settlement_currency
    # USD value of one settlement-currency unit where the loss is realized (the stop).
    usd_per_unit = s if spec.is_inverse else Fraction(1)
    if mode is RiskMode.PERCENT:
        target = eq * v / 100
    else:
        target = v / usd_per_unit
        if target > eq:
            raise _refuse(
                RefusalCode.INVALID_INPUT,
                f"a fixed risk of {_plain(v, 2)} USD is {_plain(target)} {cur}, more than the equity {_plain(eq)} {cur}",
                "value",
            )

    price_loss, fees_per_unit = loss_per_unit(spec, e, s)
    per_unit = price_loss + fees_per_unit if include_fees else price_loss
    step = numbers["amount_step"]
    min_amount = numbers["min_amount"]
    steps = math.floor(target / (per_unit * step))
    amount = steps * step
    if amount < min_amount:
        raise _refuse(
            RefusalCode.MIN_AMOUNT_EXCEEDS_RISK,
            f"the minimum amount {_plain(min_amount)} of {spec.name} would lose "
            f"{_plain(min_amount * per_unit, 10)} {cur} at the stop, more than the target risk "
            f"{_plain(target, 10)} {cur}",
            "value",
        )

    max_leverage = numbers["max_leverage"]
    fee_rate = numbers["taker_fee"]

    def fits(candidate: Fraction) -> tuple[bool, bool, bool]:
        notional = _notional(spec, candidate, e)
        lev = notional / eq
        need = notional / max_leverage + fee_rate * notional
        return lev <= max_leverage, lev <= cap, need <= funds

    warnings: list[SizingWarning] = []
    under_max, under_cap, funded = fits(amount)
    if not (under_max and under_cap and funded) and shrink_to_fit:
        # Largest step that fits every limit: each limit is linear in the amount.
        per_amount = _notional(spec, Fraction(1), e)
        limit = min(
            max_leverage * eq / per_amount,
            cap * eq / per_amount,
            funds / (per_amount * (1 / max_leverage + fee_rate)),
        )
        shrunk = math.floor(limit / step) * step
        if shrunk >= min_amount:
            warnings.append(
                SizingWarning(
                    "SHRUNK_TO_FIT",
                    f"amount cut from {_plain(amount)} to {_plain(shrunk)} to fit leverage and funds",
                )
            )
            amount = shrunk
            under_max, under_cap, funded = fits(amount)
    notional = _notional(spec, amount, e)
    leverage = notional / eq
    required = notional / max_leverage + fee_rate * notional
    if not under_max:
        raise _refuse(
            RefusalCode.LEVERAGE_ABOVE_INSTRUMENT_MAX,
            f"leverage {_plain(leverage, 2)}x is above {spec.name}'s maximum {_plain(max_leverage, 2)}x",
            "stop",
        )
    if not under_cap:
        raise _refuse(
            RefusalCode.LEVERAGE_ABOVE_CAP,
            f"leverage {_plain(leverage, 2)}x is above the cap {_plain(cap, 2)}x; widen the stop or lower the risk",
            "leverage_cap",
        )
    if not funded:
        raise _refuse(
            RefusalCode.INSUFFICIENT_FUNDS,
            f"the trade needs {_plain(required, 10)} {cur} of margin and fees, "
            f"{_plain(funds, 10)} {cur} is available",
            "available_funds",
        )

    fees = amount * fees_per_unit
    risk = amount * per_unit
    if risk < target * ROUNDED_DOWN_WARN and not warnings:
        warnings.append(
            SizingWarning(
                "RISK_ROUNDED_DOWN",
                f"rounding to the amount step of {_plain(step)} leaves "
                f"{_plain(risk * 100 / target, 1)} % of the target risk",
            )
        )
    if not include_fees and fees > risk * FEES_WARN:
        warnings.append(
            SizingWarning(
                "FEES_OUTSIDE_RISK",
                f"taker fees of entry and stop add {_plain(fees, 10)} {cur} "
                f"({_plain(fees * 100 / risk, 1)} % of the risk) on top of it",
            )
        )
    if leverage > cap * LEVERAGE_WARN:
        warnings.append(
            SizingWarning(
                "LEVERAGE_NEAR_CAP",
                f"leverage {_plain(leverage, 2)}x is near the cap {_plain(cap, 2)}x",
            )
        )
    if target * 100 / eq > LARGE_RISK_PERCENT:
        warnings.append(
            SizingWarning(
                "LARGE_RISK", f"the target risk is {_plain(target * 100 / eq, 1)} % of the equity"
            )
        )
    tick = numbers["tick_size"]
    off_tick = [
        name for name, price in (("entry", e), ("stop", s)) if (price / tick).denominator != 1
    ]
    if off_tick:
        warnings.append(
            SizingWarning(
                "PRICE_OFF_TICK",
                f"{' and '.join(off_tick)} not on the tick size {_plain(tick)}; the exchange will reject it",
            )
        )

    return SizingResult(
        instrument=spec.name,
        side=side,
        amount=_decimal(amount),
        risk=_up(risk, RISK_QUANTUM),
        risk_currency=cur,
        risk_usd=_up(risk * usd_per_unit, USD_QUANTUM),
        target_risk=_up(target, RISK_QUANTUM),
        target_risk_usd=_up(target * usd_per_unit, USD_QUANTUM),
        fees=_up(fees, RISK_QUANTUM),
        include_fees=include_fees,
        notional=_up(notional, RISK_QUANTUM),
        notional_usd=_up(amount if spec.is_inverse else notional, USD_QUANTUM),
        leverage=_up(leverage, LEVERAGE_QUANTUM),
        required_margin=_up(required, RISK_QUANTUM),
        warnings=tuple(warnings),
    )
