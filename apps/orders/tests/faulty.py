"""An exchange that misbehaves on cue: the paper engine behind a broker that rejects a chosen
order, or loses the answer to it (before or after the engine saw it), or fails cancels.

This fakes the outside world (the exchange), not our code: the bracket service, orphans and
reconcile under test are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.brokers.base import (
    BracketRequest,
    BracketResult,
    Order,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderRequest,
)
from apps.brokers.paper import PaperBroker


def leg_of(label: str) -> str:
    return label.rsplit("-", 1)[-1] if label else "other"


@dataclass
class Fault:
    leg: str  # entry, sl, tp, bracket, cancel
    kind: str  # reject, lost_before, lost_after, fail
    remaining: int = 1


class FaultyPaperBroker(PaperBroker):
    def __init__(self, *, linked: bool = True, **kwargs) -> None:
        PaperBroker.__init__(self, manual=True, speed="max", **kwargs)
        self.supports_linked_orders = linked
        self.faults = []
        self.sent: list[str] = []

    def inject(self, leg: str, kind: str, count: int = 1) -> None:
        self.faults.append(Fault(leg, kind, count))

    def _take(self, leg: str) -> Fault | None:
        for fault in self.faults:
            if fault.leg == leg:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def place_order(self, request: OrderRequest) -> Order:
        fault = self._take(leg_of(request.label))
        self.sent.append(request.label)
        if fault and fault.kind == "reject":
            raise OrderRejected("not_enough_funds", code=10009)
        if fault and fault.kind == "lost_before":
            raise OrderOutcomeUnknown("socket dropped before the answer", code="lost")
        order = await PaperBroker.place_order(self, request)
        if fault and fault.kind == "lost_after":
            raise OrderOutcomeUnknown("socket dropped after sending", code="lost")
        return order

    async def place_bracket(self, request: BracketRequest) -> BracketResult:
        fault = self._take("bracket")
        self.sent.append(request.labels[0])
        if fault and fault.kind == "reject":
            raise OrderRejected("not_enough_funds", code=10009)
        if fault and fault.kind == "lost_before":
            raise OrderOutcomeUnknown("timeout", code="lost")
        result = await PaperBroker.place_bracket(self, request)
        if fault and fault.kind == "lost_after":
            raise OrderOutcomeUnknown("timeout", code="lost")
        return result

    async def cancel(self, order_id: str) -> Order:
        fault = self._take("cancel")
        if fault and fault.kind == "fail":
            raise OrderRejected("cancel refused", code=11044)
        return await PaperBroker.cancel(self, order_id)
