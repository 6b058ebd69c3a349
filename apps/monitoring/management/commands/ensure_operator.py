from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the first operator account if no user exists. The password comes from "
        "TRADEBAAS_ADMIN_PASSWORD, else it is generated and printed once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default=os.environ.get("TRADEBAAS_ADMIN_USER", "admin"))

    def handle(self, *args, username: str, **options) -> None:
        users = get_user_model().objects
        if users.exists():
            self.stdout.write("Operator account exists; nothing to do.")
            return
        password = os.environ.get("TRADEBAAS_ADMIN_PASSWORD") or secrets.token_urlsafe(15)
        users.create_superuser(username=username, email="", password=password)
        if os.environ.get("TRADEBAAS_ADMIN_PASSWORD"):
            self.stdout.write(
                f"Created operator {username!r} with the password from TRADEBAAS_ADMIN_PASSWORD."
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Created operator {username!r} with password: {password}\n"
                    "It is shown only this once: write it down or change it in /admin/."
                )
            )
