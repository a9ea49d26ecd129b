"""What a client with several relays does with what they bring: each item handled once,
each notice's status merged. The per-relay connections are :mod:`client.circuits`'s.

The same notice, receipt, ack or escalation comes by every relay. A notice is dropped by
its id (the client's ``received`` store); a receipt or ack once this client holds one of
that kind from that recipient for that notice; an escalation or resolution once one of
that kind and level for that recipient is recorded (whichever relay made it). Each relay's
cursor moves past its own copy either way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from client.circuits import Circuit, Circuits
from client.connection import RelayError
from client.items import EscalationEvent, Item
from client.status_merge import RelayView, merge_status
from client.verify import NoticeStatusView
from keys.errors import HotlineError
from keys.frames import Event
from keys.receipts import Confirmation

if TYPE_CHECKING:
    from client.client import HotlineClient

log = logging.getLogger("hotline.client.multi")


def _confirmation_known(client: HotlineClient, event: Event) -> bool:
    if event.kind not in ("receipt", "ack") or event.confirmation is None:
        return False
    try:
        recipient = Confirmation.decode(event.confirmation).recipient
    except HotlineError:
        return False  # verification will say what is wrong with it
    return any(c.recipient == recipient and c.kind == event.kind
               for c in client.state.confirmations(event.notice_id))


async def handle_once(client: HotlineClient, circuit: Circuit, event: Event) -> Item | None:
    """Handle ``event`` (as it came by ``circuit``) unless another relay brought it first;
    then move that relay's cursor past it."""
    if client.circuits.multi and _confirmation_known(client, event):
        circuit.advance(event.seq)
        log.info("circuits.duplicate relay=%s kind=%s notice_id=%s", circuit.name, event.kind,
                 event.notice_id.hex())
        return None
    before = ({(r.kind, r.desk, r.level) for r in client.state.relay_events(event.notice_id)}
              if client.circuits.multi and event.kind in ("escalation", "resolved") else set())
    item = await client.handle(circuit.local(event), circuit)
    circuit.advance(event.seq)
    if isinstance(item, EscalationEvent) and (item.kind, item.desk, item.level) in before:
        return None
    return item


async def merged_status(circuits: Circuits, notice_id: bytes,
                        one: Callable[[Circuit], Awaitable[NoticeStatusView]], *,
                        now: int) -> NoticeStatusView:
    """Every relay's verified view of the notice, merged (``view.merged``); the view
    returned is that of the first relay whose acceptance verified."""
    views = []
    for circuit, got in await circuits.every(one):
        if isinstance(got, RelayError) and got.status == 404:
            views.append(RelayView(circuit.name, missing=True, error=got.message))
        elif isinstance(got, BaseException):
            views.append(RelayView(circuit.name, error=str(got)))
        else:
            views.append(RelayView(circuit.name, got))
    merged = merge_status(notice_id, views, now=now, lag_ms=circuits.lag_ms)
    for flag in merged.flags:
        log.warning("status.relay_flagged notice_id=%s relay=%s flag=%s desk=%s detail=%s",
                    notice_id.hex(), flag.relay, flag.kind, flag.desk, flag.detail)
    shown = [v.view for v in views if v.view is not None and v.relay in merged.accepted_by]
    shown = shown or [v.view for v in views if v.view is not None]
    if not shown:
        errors = [v.error for v in views]
        raise RelayError(404 if all(v.missing for v in views) else 503,
                         "no_relay_status", "; ".join(str(e) for e in errors))
    return dataclasses.replace(shown[0], merged=merged)
