"""Brackets (entry + stop-loss + take-profit as one set), their orders and the closed trades.

Rows are written BEFORE a request goes out (intent) and updated after (outcome), so a crash
between the two leaves a row that names the labels to look up on the exchange.
"""

from __future__ import annotations

from django.db import models


class BracketState(models.TextChoices):
    ARMED = "ARMED", "Intent written ahead: labels only, not sent (apps/orders/armed.py)"
    INTENT = "INTENT", "Intent written, nothing sent"
    PLACING = "PLACING", "Request sent, no answer yet"
    UNKNOWN = "UNKNOWN", "Outcome unknown: resolve by label"
    OPEN = "OPEN", "Complete set on the exchange"
    CLOSED = "CLOSED", "Position closed, trade recorded"
    FAILED = "FAILED", "Refused: nothing on the exchange"
    ROLLED_BACK = "ROLLED_BACK", "Partly placed, all cancelled"
    BROKEN = "BROKEN", "Rollback left orders behind"


LIVE_BRACKET_STATES = (
    BracketState.INTENT,
    BracketState.PLACING,
    BracketState.UNKNOWN,
    BracketState.OPEN,
)


class OrderRole(models.TextChoices):
    ENTRY = "entry", "Entry"
    STOP_LOSS = "sl", "Stop-loss"
    TAKE_PROFIT = "tp", "Take-profit"
    CLOSE = "close", "Close / re-protect"


class OrderStatus(models.TextChoices):
    INTENT = "intent", "Intent"
    SENT = "sent", "Sent, no answer"
    OPEN = "open", "Open"
    UNTRIGGERED = "untriggered", "Untriggered"
    TRIGGERED = "triggered", "Triggered"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    NOT_PLACED = "not_placed", "Never reached the exchange"
    UNKNOWN = "unknown", "Unknown"


class Bracket(models.Model):
    bracket_id = models.CharField(max_length=40, unique=True)
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    broker_account_id = models.BigIntegerField(null=True, blank=True)
    broker = models.CharField(max_length=32)
    instrument = models.CharField(max_length=64)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=10)
    signal_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    stop_price = models.DecimalField(max_digits=28, decimal_places=10)
    take_profit_price = models.DecimalField(max_digits=28, decimal_places=10)
    linked = models.BooleanField(default=True, help_text="Exchange-linked (one request)")
    state = models.CharField(
        max_length=12, choices=BracketState.choices, default=BracketState.INTENT
    )
    error = models.TextField(blank=True)
    risk_settings = models.JSONField(default=dict, blank=True)
    sizing = models.JSONField(default=dict, blank=True)
    signal = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    opened_ms = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"bracket {self.bracket_id} {self.side} {self.amount} {self.state}"


class Order(models.Model):
    bracket = models.ForeignKey(Bracket, on_delete=models.CASCADE, related_name="orders")
    role = models.CharField(max_length=8, choices=OrderRole.choices)
    label = models.CharField(max_length=64, db_index=True)
    exchange_id = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(
        max_length=12, choices=OrderStatus.choices, default=OrderStatus.INTENT
    )
    order_type = models.CharField(max_length=16)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=10)
    filled_amount = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    trigger_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    average_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    reduce_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.role} {self.label} {self.exchange_id or '-'} {self.status}"


class Trade(models.Model):
    bracket = models.OneToOneField(Bracket, on_delete=models.PROTECT, related_name="trade")
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    broker_account_id = models.BigIntegerField(null=True, blank=True)
    instrument = models.CharField(max_length=64)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=10)
    entry_price = models.DecimalField(max_digits=28, decimal_places=10)
    exit_price = models.DecimalField(max_digits=28, decimal_places=10)
    pnl = models.DecimalField(
        max_digits=28, decimal_places=12, help_text="Net of fees, settlement currency"
    )
    pnl_usd = models.DecimalField(max_digits=28, decimal_places=8)
    fees = models.DecimalField(max_digits=28, decimal_places=12)
    currency = models.CharField(max_length=8)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(db_index=True)
    duration_seconds = models.DecimalField(max_digits=16, decimal_places=3)
    exit_reason = models.CharField(max_length=24)
    risk_settings = models.JSONField(default=dict, blank=True)
    fill_ids = models.JSONField(default=list, blank=True)
    recorded_by = models.CharField(max_length=16, default="loop", help_text="loop or reconcile")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-closed_at", "-id")

    def __str__(self) -> str:
        return f"trade {self.bracket_id} {self.side} {self.pnl} {self.exit_reason}"
