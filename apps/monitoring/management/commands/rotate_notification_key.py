"""Re-encrypt the stored Telegram bot token with the newest CREDENTIALS_KEYS key.

Run it together with ``rotate_credentials_key`` (broker credentials) during a key rotation.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.monitoring.secrets import notification_secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt the Telegram bot token with the newest CREDENTIALS_KEYS key."

    def handle(self, *args, **options) -> None:
        try:
            count = notification_secrets_rotate()
        except (
            Exception
        ) as exc:  # InvalidToken / CredentialsUnreadable: a key was dropped too early
            raise CommandError(
                f"The Telegram bot token cannot be decrypted ({type(exc).__name__}): "
                "was the old key removed before rotating? Enter the token again in the settings."
            ) from exc
        self.stdout.write(f"Re-encrypted {count} Telegram bot token(s).")
