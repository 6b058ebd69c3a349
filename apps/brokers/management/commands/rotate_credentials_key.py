"""Re-encrypt every stored broker credential with the newest key of CREDENTIALS_KEYS.

Rotation: put the new key FIRST in CREDENTIALS_KEYS (keep the old one after it), restart, run
this command, then drop the old key.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.brokers.crypto import CredentialsUnreadable
from apps.brokers.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored broker credential with the newest CREDENTIALS_KEYS key."

    def handle(self, *args, **options) -> None:
        try:
            count = credentials_rotate()
        except CredentialsUnreadable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Re-encrypted the credentials of {count} broker account(s).")
