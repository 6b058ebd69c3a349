"""BrokerAccount: the credentials of one exchange account, encrypted at rest, and its state;
PaperExchangeState: the paper exchange's account, kept across restarts.

At most one account is active (a partial unique index, so two racing connects cannot both win).
The state fields say what the last connect/test/disconnect found; the snapshot fields hold the
account summary last read by whoever holds the live connection (the runner), so pages do not
have to open a connection to show a balance.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.brokers import crypto
from apps.brokers.base import ConnectionState
from apps.brokers.registry import BROKER_CHOICES, get_broker_info

STATE_CHOICES = [(state.value, state.value.capitalize()) for state in ConnectionState]


class BrokerAccount(models.Model):
    broker = models.CharField(max_length=32, choices=BROKER_CHOICES)
    label = models.CharField(max_length=100, blank=True)
    testnet = models.BooleanField(default=True)
    # Fernet tokens (see crypto.py); never the plaintext.
    api_key_encrypted = models.TextField(editable=False)
    api_secret_encrypted = models.TextField(editable=False)
    # The last 4 characters of the API key (what every page shows), so listing needs no key.
    key_hint = models.CharField(max_length=4, blank=True, editable=False)
    auto_reconnect = models.BooleanField(default=False)
    is_active = models.BooleanField(default=False)
    state = models.CharField(
        max_length=16, choices=STATE_CHOICES, default=ConnectionState.DISCONNECTED.value
    )
    state_since = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    last_connected_at = models.DateTimeField(null=True, blank=True)
    # Account snapshot, written by the holder of the live connection.
    snapshot_equity = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    snapshot_available = models.DecimalField(
        max_digits=30, decimal_places=10, null=True, blank=True
    )
    snapshot_currency = models.CharField(max_length=16, blank=True)
    snapshot_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_active", "-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"],
                condition=Q(is_active=True),
                name="brokers_at_most_one_active_account",
            ),
        ]

    def __str__(self) -> str:
        env = "testnet" if self.testnet else "mainnet"
        return f"{self.display_name} {env} {self.masked_key}"

    # -- credentials ---------------------------------------------------------------------------
    def set_credentials(self, *, api_key: str, api_secret: str) -> None:
        self.api_key_encrypted = crypto.encrypt(api_key)
        self.api_secret_encrypted = crypto.encrypt(api_secret)
        self.key_hint = api_key[-4:] if len(api_key) > 4 else ""

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted)

    @property
    def api_secret(self) -> str:
        return crypto.decrypt(self.api_secret_encrypted)

    @property
    def masked_key(self) -> str:
        return f"****{self.key_hint}"

    # -- presentation --------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.label or get_broker_info(self.broker).name

    @property
    def connection_state(self) -> ConnectionState:
        return ConnectionState(self.state)

    @property
    def snapshot(self) -> dict[str, Decimal | str | None] | None:
        if self.snapshot_at is None:
            return None
        return {
            "equity": self.snapshot_equity,
            "available_funds": self.snapshot_available,
            "currency": self.snapshot_currency,
            "at": self.snapshot_at.isoformat(),
        }


PAPER_STATE_ID = 1


class PaperExchangeState(models.Model):
    """The paper exchange's account and replay cursor (one row), so paper trading survives a
    restart like a real exchange account does (``apps.brokers.simulator.snapshot``).

    ``owner`` names the PaperBroker session that holds the account: connecting claims it, and a
    write counts only while the writer still owns it (``writes`` counts them), so a session that
    lost the account to a newer one can never overwrite the newer state.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=PAPER_STATE_ID, editable=False)
    data = models.JSONField(default=dict, blank=True)
    format_version = models.PositiveIntegerField(default=0)
    owner = models.CharField(max_length=32, blank=True)
    writes = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "paper exchange state"
        verbose_name_plural = "paper exchange state"
        constraints = [
            models.CheckConstraint(
                condition=Q(id=PAPER_STATE_ID), name="brokers_paper_state_single_row"
            ),
        ]

    def __str__(self) -> str:
        return f"Paper exchange state (format {self.format_version}, {self.writes} writes)"

    @classmethod
    def claim(cls, owner: str) -> PaperExchangeState:
        """Make ``owner`` the session that holds the account; the row as it was stored."""
        with transaction.atomic():
            row, _ = cls.objects.select_for_update().get_or_create(id=PAPER_STATE_ID)
            row.owner = owner
            row.save(update_fields=["owner"])
        return row

    @classmethod
    def store(cls, owner: str, data: dict, format_version: int) -> bool:
        """Write the state as ``owner`` (one UPDATE); False when ``owner`` no longer holds it."""
        return bool(
            cls.objects.filter(id=PAPER_STATE_ID, owner=owner).update(
                data=data,
                format_version=format_version,
                writes=F("writes") + 1,
                updated_at=timezone.now(),
            )
        )

    @classmethod
    def reset(cls) -> PaperExchangeState | None:
        """Forget the paper account (the next session starts fresh); the row that was removed."""
        with transaction.atomic():
            row = cls.objects.select_for_update().filter(id=PAPER_STATE_ID).first()
            if row is not None:
                row.delete()
        return row
