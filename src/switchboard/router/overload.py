"""Edge shedding: the router passes its shedding nodes only the calls they are taking.

An overloaded media node sheds new calls with ``503`` + ``Retry-After`` (docs/media.md
"Overload"), but each refusal still costs the node, on the CPU it lacks, a full parse of
the INVITE, a transaction, a ``100 Trying``, the ``503``, its retransmission timer and
the router's ACK — and the node is asked again for every call it refuses. SIP overload
control (RFC 7339 between hops; RFC 7415's rate-based control) moves that work upstream:
the client learns how much the overloaded server takes and refuses the rest itself. Our
nodes say it with their shed 503s: the calls the router sent them in the last window,
less those they shed, are the rate they are carrying.

:class:`EdgeShedding` keeps a rate limit on the new calls the router sends to its nodes
(``rate``, calls/s; None = no limit), updated every :data:`WINDOW` seconds:

* when **every** destination tried in the window shed at least one call (the platform is
  overloaded, not one node), the limit becomes the rate the nodes took in it — the calls
  sent less the calls shed — never under :data:`MIN_SHARE` of what was sent (some calls
  always reach the nodes: their answers are the only measurement);
  a window in which they shed nearly all they got (a backlog draining) halves it at most;
* otherwise the nodes have room (or one of them has, and failover places the calls the
  other shed): the limit grows by :data:`GROWTH` a window, doubles when no node shed
  anything, and is lifted once the calls sent fall clearly under it (the edge is not
  what holds them back any more: the overload is over);
* new calls over the limit are refused (a token bucket holding :data:`BURST` seconds of
  the rate at most, so refusals are spread evenly, not in bursts).

So the nodes get about what they carry while the excess is refused at the edge with a
stateless ``503`` + ``Retry-After`` — a fraction of a node's cost, in another process —
and the nodes' own measure of how far behind they are keeps deciding: each time the
limit has grown past what they take, they shed again and the limit follows. When the
offered calls fall under the limit (the peak is over) nothing is refused at once.
Emergency calls are never refused (the proxy does not ask). Pure: counts and arithmetic,
no IO.
"""

from __future__ import annotations

from collections.abc import Iterable

WINDOW = 0.5  # seconds between updates of the limit (the nodes measure every 20 ms)
GROWTH = 1.25  # the limit's growth per window in which not every node shed
MIN_SHARE = 0.05  # of the calls sent: the limit never falls under this
BURST = 0.1  # seconds of the rate the token bucket holds


class EdgeShedding:
    """The rate of new calls the router sends to its nodes while they shed (module
    docstring)."""

    __slots__ = (
        "_last",
        "_shed",
        "_shed_by",
        "_start",
        "_tokens",
        "_tries",
        "_until",
        "rate",
        "retry_after",
    )  # fmt: skip

    def __init__(self) -> None:
        self.rate: float | None = None  # calls/s let through to the nodes; None: no limit
        self.retry_after = 1  # the smallest Retry-After of the nodes' shed 503s lately
        self._tokens = 0.0  # calls that may be sent now (token bucket)
        self._last = 0.0  # when the bucket was filled last
        self._tries = 0  # INVITEs sent to a destination in this window
        self._shed = 0  # ... of which the destination shed
        self._shed_by: set[str] = set()  # destinations that shed in this window
        self._start = 0.0  # start of this window
        self._until = 0.0  # its end

    def tried(self) -> None:
        """An INVITE was sent to a destination."""
        self._tries += 1

    def shed(self, uri: str, retry_after: int) -> None:
        """Destination ``uri`` shed a call (503 + Retry-After, no Reason)."""
        self._shed += 1
        if not self._shed_by:
            self.retry_after = retry_after
        self._shed_by.add(uri)
        self.retry_after = min(self.retry_after, retry_after)

    def due(self, now: float) -> bool:
        """Is the window over (call :meth:`update` before :meth:`refuse`)?"""
        return now >= self._until

    def update(self, now: float, destinations: Iterable[str]) -> None:
        """Close the window: the limit from what the ``destinations`` (the URIs a new
        call may be sent to now) did with the INVITEs of the window."""
        span = max(now - self._start, WINDOW)
        tries, shed = self._tries, self._shed
        everywhere = bool(self._shed_by) and all(d in self._shed_by for d in destinations)
        sent = tries / span
        rate = self.rate
        if tries and shed and everywhere:
            # what the nodes took; a window in which they shed nearly all they got (a
            # backlog draining) halves the limit at most
            taken = max(max(0, tries - shed) / span, MIN_SHARE * sent)
            self.rate = taken if rate is None else max(taken, rate / 2)
            self._tokens = min(self._tokens, self.rate * BURST)
        elif rate is not None:
            if sent < 0.8 * rate:
                self.rate = None  # the edge was not what held the calls back: over
            else:  # room: grow, faster when no node shed at all
                windows = max(1, int(span / WINDOW))
                self.rate = rate * (GROWTH if shed else 2.0) ** windows
        self._tries = self._shed = 0
        self._shed_by.clear()
        self._start = now
        self._until = now + WINDOW

    def refuse(self, now: float) -> bool:
        """One new (non-emergency) call at ``now``: refuse it at the edge?"""
        rate = self.rate
        if rate is None:
            return False
        elapsed = now - self._last if now > self._last else 0.0
        tokens = min(self._tokens + elapsed * rate, max(1.0, rate * BURST))
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return False
        self._tokens = tokens
        return True
