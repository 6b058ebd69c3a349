"""The table of API methods the simulator answers, filled by ``@rpc`` in the method modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apps.brokers.simulator.wire.params import Params

if TYPE_CHECKING:
    from apps.brokers.simulator.deribit_server import DeribitSimServer
    from apps.brokers.simulator.wire.session import Session


@dataclass(slots=True)
class Call:
    """One request as a handler sees it."""

    server: DeribitSimServer
    session: Session
    method: str
    params: Params
    us_in: int


Handler = Callable[[Call], Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    handler: Handler
    websocket_only: bool = False
    matching_engine: bool = False

    @property
    def is_private(self) -> bool:
        return self.name.startswith("private/")


METHODS: dict[str, MethodSpec] = {}

# A handler returns this when Deribit sends no answer (private/logout).
NO_ANSWER: Any = object()


def rpc(
    name: str, *, websocket_only: bool = False, matching_engine: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name] = MethodSpec(name, handler, websocket_only, matching_engine)
        return handler

    return register
