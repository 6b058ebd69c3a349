"""Credential encryption at rest: MultiFernet over ``settings.CREDENTIALS_KEYS`` (newest first).

Encrypting always uses the newest key; decrypting tries every key, so a new key can be put in
front while old ciphertexts stay readable until ``manage.py rotate_credentials_key`` has
re-encrypted them with the newest one. After that the old key can be dropped.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialsUnreadable(Exception):
    """A stored credential that none of the configured keys can decrypt (a key was dropped)."""

    def __init__(self) -> None:
        super().__init__(
            "Stored broker credentials cannot be decrypted with the configured CREDENTIALS_KEYS "
            "(was a key removed before rotate_credentials_key ran?). Reconnect the account."
        )


def _keys() -> list[str]:
    keys = settings.CREDENTIALS_KEYS
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured("CREDENTIALS_KEYS is empty: give one or more Fernet keys.")
    return list(keys)


def multi_fernet() -> MultiFernet:
    """Built on each call, so a settings change (a test, a rotation) takes effect at once."""
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt(plaintext: str) -> str:
    return multi_fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return multi_fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError) as exc:
        raise CredentialsUnreadable() from exc


def rotate(ciphertext: str) -> str:
    """The same plaintext encrypted with the newest key (raises if no key can read it)."""
    try:
        return multi_fernet().rotate(ciphertext.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError, UnicodeError) as exc:
        raise CredentialsUnreadable() from exc


def mask(value: str, visible: int = 4) -> str:
    """``****abcd``: only the last ``visible`` characters, and none of a value that short."""
    if len(value) <= visible:
        return "****"
    return "****" + value[-visible:]
