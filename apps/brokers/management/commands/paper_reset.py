"""Clear the paper exchange's stored account: the next paper session starts with the starting
balances, no position, no order, and the replay from its first candle.

A paper session still running loses the account at its next write and stops (its run pauses as
disconnected), so stop the run first.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.brokers.models import PaperExchangeState
from apps.brokers.simulator.instruments import DEFAULT_BALANCES
from apps.brokers.simulator.snapshot import snapshot_summary


class Command(BaseCommand):
    help = "Clear the paper account (balances, positions, orders, replay) kept in the database."

    def handle(self, *args, **options) -> None:
        removed = PaperExchangeState.reset()
        fresh = ", ".join(f"{amount} {currency}" for currency, amount in DEFAULT_BALANCES.items())
        if removed is None:
            self.stdout.write(f"No paper account was stored; paper starts fresh ({fresh}).")
            return
        held = snapshot_summary(removed.data)
        self.stdout.write(
            f"Paper account reset (it was last written {removed.updated_at:%Y-%m-%d %H:%M:%S %Z}, "
            f"{removed.writes} writes; balances {held.get('balances')}, "
            f"positions {held.get('positions') or 'none'}, "
            f"open orders {held.get('open_orders', 0)}). "
            f"The next paper session starts fresh ({fresh})."
        )
