"""Who may hold a connection slot on a server: the admission state, without any I/O.

A server has two pools.  *Pending* connections have been accepted but have not finished the
Noise handshake; they have proven nothing, cost a socket and a task, and an honest one
leaves the pool within milliseconds.  *Established* connections have finished the handshake.
`Admission` tracks both and decides, for each event, what the server must do:

- `arrive(source)`: a connection was accepted from IP address `source`.  Refused at once
  if that source already holds `max_per_source` connections (pending plus established), or
  if `max_established` connections are established (no point in handshaking a peer we
  would refuse).  Otherwise admitted as pending; if the pending pool is full, the oldest
  pending handshake of the source that holds the most pending handshakes is *evicted* to
  make room (ties: the source whose oldest pending handshake is oldest), and the server
  must close it.
- `establish(ticket)`: the handshake completed.  Refused if `max_established` connections
  were established meanwhile (the server closes it), else moved to the established pool.
- `release(ticket)`: the connection is gone, whatever its state; idempotent.

Why this eviction rule: a flood of silent connections can only fill the pending pool by
holding many pending handshakes, so whoever holds the most is the one to lose a slot, and a
newcomer is never refused for lack of room.  An honest handshake (its source holding one
pending handshake) can only be evicted when every source holds exactly one: that takes
`max_pending - 1` distinct flooding sources, and even then it goes only once it is the oldest,
after up to `max_pending - 1` newer arrivals during its few milliseconds.

Arrival order is a sequence number, not a clock: this module must never read the time,
sleep or touch a socket; `transport.server` carries its decisions out.
"""

from __future__ import annotations

import enum
from collections import Counter

import attrs

__all__ = ["Admission", "Admitted", "Refused", "Ticket", "TicketState"]


class TicketState(enum.Enum):
    PENDING = "pending"  # accepted, handshake not complete
    ESTABLISHED = "established"
    EVICTED = "evicted"  # dropped from the pending pool to admit a newcomer
    REFUSED = "refused"  # handshake completed with the established pool full; closing
    RELEASED = "released"  # gone; counts nothing


@attrs.define(eq=False)
class Ticket:
    """One admitted connection.  `sequence` orders arrivals (lower is older)."""

    source: str
    sequence: int
    state: TicketState = TicketState.PENDING


@attrs.frozen
class Admitted:
    ticket: Ticket
    # A pending handshake dropped to make room (the server must close it), or None.
    evicted: Ticket | None = None


@attrs.frozen
class Refused:
    reason: str


@attrs.define(eq=False)
class Admission:
    """The two pools and the per-source counts (see the module docstring)."""

    max_pending: int
    max_established: int
    max_per_source: int
    # Pending tickets per source, oldest first (dicts keep insertion order).
    _pending: dict[str, dict[Ticket, None]] = attrs.field(init=False, factory=dict)
    _pending_count: int = attrs.field(init=False, default=0)
    _established: int = attrs.field(init=False, default=0)
    # Pending, established and refused-but-still-open tickets per source.
    _per_source: Counter[str] = attrs.field(init=False, factory=Counter)
    _next_sequence: int = attrs.field(init=False, default=0)

    @property
    def pending(self) -> int:
        return self._pending_count

    @property
    def established(self) -> int:
        return self._established

    def connections_from(self, source: str) -> int:
        """Connections `source` holds: pending, established, and refused but not yet closed."""
        return self._per_source[source]

    def pending_from(self, source: str) -> int:
        return len(self._pending.get(source, ()))

    def arrive(self, source: str) -> Admitted | Refused:
        held = self._per_source[source]
        if held >= self.max_per_source:
            return Refused(
                f"{source} already holds {held} connections (limit {self.max_per_source})"
            )
        if self._established >= self.max_established:
            return Refused(
                f"{self._established} connections established (limit {self.max_established})"
            )
        evicted = None
        if self._pending_count >= self.max_pending:
            evicted = self._victim()
            self._leave_pending(evicted)
            self._per_source[evicted.source] -= 1
            evicted.state = TicketState.EVICTED
        ticket = Ticket(source, self._next_sequence)
        self._next_sequence += 1
        self._pending.setdefault(source, {})[ticket] = None
        self._pending_count += 1
        self._per_source[source] += 1
        return Admitted(ticket, evicted)

    def establish(self, ticket: Ticket) -> Refused | None:
        """The handshake of `ticket` completed: None if it may stay, else why it may not."""
        if ticket.state is not TicketState.PENDING:
            return Refused(f"the connection is {ticket.state.value}")
        self._leave_pending(ticket)
        if self._established >= self.max_established:
            ticket.state = TicketState.REFUSED
            return Refused(
                f"{self._established} connections established (limit {self.max_established})"
            )
        ticket.state = TicketState.ESTABLISHED
        self._established += 1
        return None

    def release(self, ticket: Ticket) -> None:
        state = ticket.state
        if state is TicketState.PENDING:
            self._leave_pending(ticket)
        elif state is TicketState.ESTABLISHED:
            self._established -= 1
        if state in (TicketState.PENDING, TicketState.ESTABLISHED, TicketState.REFUSED):
            self._per_source[ticket.source] -= 1
            if not self._per_source[ticket.source]:
                del self._per_source[ticket.source]
        ticket.state = TicketState.RELEASED

    # ---- internals ---------------------------------------------------------------------

    def _victim(self) -> Ticket:
        # The largest holder's oldest; a tie goes to the source whose oldest is oldest, never
        # to chance.  At most max_pending sources hold pending tickets, so this scan is cheap.
        def rank(tickets: dict[Ticket, None]) -> tuple[int, int]:
            return (len(tickets), -next(iter(tickets)).sequence)

        largest = max(self._pending.values(), key=rank)
        return next(iter(largest))

    def _leave_pending(self, ticket: Ticket) -> None:
        tickets = self._pending[ticket.source]
        del tickets[ticket]
        if not tickets:
            del self._pending[ticket.source]
        self._pending_count -= 1
