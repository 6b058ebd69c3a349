"""The trader's risk settings: one row for the whole installation.

Tradebaas has one trader and at most one active run, so the settings are a singleton: the row
with primary key 1 (``SINGLETON_ID``), guaranteed by a check constraint, created with the
defaults on first read (``services.risk_settings_get``). Should several accounts ever trade at
once, this becomes one row per broker account (a unique foreign key instead of the fixed id).

Validation lives in ``clean()`` (and the same bounds as database constraints), so the admin, the
API and the services refuse the same values with the same messages.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from apps.risk.sizing import decimal_str

SINGLETON_ID = 1
MAX_LEVERAGE_CAP = Decimal("125")  # the highest leverage any registered broker offers
MAX_FIXED_RISK_USD = Decimal("1000000")
MAX_COOLDOWN_MINUTES = 7 * 24 * 60
MAX_OPEN_TRADES = 20


class RiskMode(models.TextChoices):
    PERCENT = "percent", "Percent of equity"
    FIXED = "fixed", "Fixed amount in USD"


class RiskSettings(models.Model):
    """The trader's risk settings (one row).

    ``max_open_trades``: the runner opens no bracket while this many brackets of ours are live
    on the account (any instrument; those still being placed or resolved count too). The loop
    itself holds ONE position per instrument at a time (it analyses only when flat and the
    bracket service refuses a second entry), so with one run the default of 1 and any higher
    value behave alike; a higher value only matters when several brackets share the account.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    mode = models.CharField(max_length=10, choices=RiskMode.choices, default=RiskMode.PERCENT)
    value = models.DecimalField(
        max_digits=18,
        decimal_places=8,
        default=Decimal("1"),
        help_text="Percent of equity (percent mode) or USD (fixed mode) lost when the stop fills.",
    )
    leverage_cap = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        default=Decimal("10"),
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(MAX_LEVERAGE_CAP)],
        help_text="A trade whose notional / equity exceeds this is refused.",
    )
    max_open_trades = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_OPEN_TRADES)],
        help_text="No new bracket while this many of ours are live (the loop holds one position "
        "per instrument at a time).",
    )
    include_fees = models.BooleanField(
        default=False, help_text="Count the taker fees of entry and stop inside the risk."
    )
    cooldown_minutes = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_COOLDOWN_MINUTES)],
        help_text="Pause after a stop-out for this many minutes (0: off).",
    )
    daily_loss_limit_pct = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal("100"))],
        help_text="Pause when today's (UTC) closed losses reach this percent of the day's starting equity (empty: off).",
    )
    max_drawdown_pct = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal("100"))],
        help_text="Pause when equity falls this percent below its peak (empty: off).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "risk settings"
        verbose_name_plural = "risk settings"
        constraints = [
            models.CheckConstraint(condition=Q(id=SINGLETON_ID), name="risk_settings_singleton"),
            models.CheckConstraint(condition=Q(value__gt=0), name="risk_value_positive"),
            models.CheckConstraint(
                condition=~Q(mode=RiskMode.PERCENT) | Q(value__lte=100),
                name="risk_percent_at_most_100",
            ),
            models.CheckConstraint(
                condition=Q(leverage_cap__gt=0) & Q(leverage_cap__lte=MAX_LEVERAGE_CAP),
                name="risk_leverage_cap_range",
            ),
            models.CheckConstraint(
                condition=Q(max_open_trades__gte=1), name="risk_max_open_trades_min"
            ),
        ]

    def __str__(self) -> str:
        unit = "%" if self.mode == RiskMode.PERCENT else " USD"
        return f"Risk {plain(self.value)}{unit}, leverage ≤ {plain(self.leverage_cap)}x"

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        if self.value is not None:
            if self.value <= 0:
                errors["value"] = "The risk must be positive."
            elif self.mode == RiskMode.PERCENT and self.value > 100:
                errors["value"] = "A percent risk must be at most 100."
            elif self.mode == RiskMode.FIXED and self.value > MAX_FIXED_RISK_USD:
                errors["value"] = f"A fixed risk must be at most {MAX_FIXED_RISK_USD} USD."
        if errors:
            raise ValidationError(errors)


def plain(value: Decimal | None) -> str:
    return "" if value is None else decimal_str(value)
