"""``public/auth``: client credentials and refresh tokens, with expiring access tokens."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from apps.brokers.simulator.wire.errors import INVALID_CREDENTIALS, RpcError, invalid_params
from apps.brokers.simulator.wire.params import Params

SCOPE = "account:read_write block_trade:read connection mainaccount trade:read_write wallet:read"


@dataclass(slots=True)
class Grant:
    access_token: str
    refresh_token: str
    expires_at: float  # monotonic seconds

    def is_valid(self, now: float) -> bool:
        return now < self.expires_at


class TokenStore:
    """Issues token pairs for one API key. Access tokens expire after ``ttl`` seconds."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        ttl: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl = ttl
        self._clock = clock
        self._by_access: dict[str, Grant] = {}
        self._by_refresh: dict[str, Grant] = {}

    def authenticate(self, params: Params) -> tuple[Grant, dict[str, object]]:
        grant_type = params.str(
            "grant_type",
            required=True,
            choices=("client_credentials", "client_signature", "refresh_token"),
        )
        if grant_type == "client_credentials":
            client_id = params.str("client_id", required=True)
            client_secret = params.str("client_secret", required=True)
            if not (
                secrets.compare_digest(str(client_id), self.client_id)
                and secrets.compare_digest(str(client_secret), self.client_secret)
            ):
                raise RpcError(INVALID_CREDENTIALS)
        elif grant_type == "refresh_token":
            token = params.str("refresh_token", required=True)
            old = self._by_refresh.pop(str(token), None)
            if old is None:
                raise RpcError(INVALID_CREDENTIALS)
            self._by_access.pop(old.access_token, None)
        else:
            raise invalid_params("client_signature is not supported by the simulator", "grant_type")
        grant = self._issue()
        result: dict[str, object] = {
            "access_token": grant.access_token,
            "expires_in": max(1, round(self.ttl)),
            "refresh_token": grant.refresh_token,
            "scope": SCOPE,
            "token_type": "bearer",
            "enabled_features": [],
        }
        state = params.str("state")
        if state is not None:
            result["state"] = state
        return grant, result

    def _issue(self) -> Grant:
        stamp = int(time.time() * 1000)
        grant = Grant(
            access_token=f"{stamp}.{secrets.token_urlsafe(24)}",
            refresh_token=f"{stamp}.{secrets.token_urlsafe(24)}",
            expires_at=self._clock() + self.ttl,
        )
        self._by_access[grant.access_token] = grant
        self._by_refresh[grant.refresh_token] = grant
        return grant

    def check(self, access_token: str | None) -> bool:
        if not access_token:
            return False
        grant = self._by_access.get(access_token)
        return grant is not None and grant.is_valid(self._clock())

    def grant_is_valid(self, grant: Grant | None) -> bool:
        return (
            grant is not None
            and self._by_access.get(grant.access_token) is grant
            and grant.is_valid(self._clock())
        )

    def revoke(self, grant: Grant) -> None:
        self._by_access.pop(grant.access_token, None)
        self._by_refresh.pop(grant.refresh_token, None)

    def revoke_all(self) -> None:
        self._by_access.clear()
        self._by_refresh.clear()
