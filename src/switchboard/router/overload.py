"""Edge shedding: the router refuses the share of new calls its media nodes are shedding.

An overloaded media node sheds new calls with ``503`` + ``Retry-After`` (docs/media.md
"Overload"), but each refusal still costs the node, on the CPU it lacks, a full parse of
the INVITE, a transaction, a ``100 Trying``, the ``503``, its retransmission timer and
the router's ACK — and the node is asked again for every call it refuses. RFC 7339's
loss-based overload control moves that work upstream: the overloaded server tells its
client what share of its requests to drop, and the client refuses them itself. Our
nodes say it with their shed 503s: the share of the INVITEs the router sent them in the
last window that they shed is the share the router should have refused at its edge.

:class:`EdgeShedding` keeps that share, updated every :data:`WINDOW` seconds:

* when **every** destination tried in the window shed at least one call (the platform
  is overloaded, not one node), the share ``p`` absorbs the nodes' own shedding ``q``:
  ``p' = 1 - (1 - p)(1 - q)`` — what the edge refused plus what got through and was
  refused anyway;
* when only some destinations shed (a node has room: the router's failover places the
  calls another node shed) it decays by :data:`STEP_DOWN` a window, so the edge gives
  the nodes back their load step by step and the nodes' own measure of how far behind
  they are keeps deciding;
* when no destination shed anything in the window it is halved (and dropped below
  :data:`STEP_DOWN`): the nodes have room — the overload is over — and the calls the
  edge still refused would be refused for nothing;
* when fewer new calls are offered than the edge let through in the window before, it
  is dropped at once: the peak is over (the nodes' backlog, still shed against the few
  calls of the window, would otherwise drive the share up and refuse calls for
  seconds after it);
* it never exceeds :data:`MAX_SHARE`: some calls always reach the nodes, whose answers
  are the only measurement.

So the nodes settle a little above their shedding threshold, refusing a few calls a
second themselves while the router refuses the rest with a stateless ``503`` +
``Retry-After`` — a fraction of the node's cost, on another process. Refusals are spread
evenly (every n-th call), emergency calls are never refused (the proxy does not ask).
Pure: counts and arithmetic, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable

WINDOW = 0.5  # seconds between updates of the share (the nodes measure every 20 ms)
STEP_DOWN = 0.05  # share given back per window while not every node sheds
MAX_SHARE = 0.95  # the edge never refuses every call: the nodes' answers are the signal


class EdgeShedding:
    """The share of new calls the router refuses at its edge (module docstring)."""

    __slots__ = (
        "_asked",
        "_asked_before",
        "_credit",
        "_shed",
        "_shed_by",
        "_tries",
        "_until",
        "retry_after",
        "share",
    )

    def __init__(self) -> None:
        self.share = 0.0  # of new calls, refused at the edge now
        self.retry_after = 1  # the smallest Retry-After of the nodes' shed 503s lately
        self._credit = 0.0  # shares of a call owed to refusals (spreads them evenly)
        self._tries = 0  # INVITEs sent to a destination in this window
        self._shed = 0  # ... of which the destination shed
        self._shed_by: set[str] = set()  # destinations that shed in this window
        self._until = 0.0  # end of this window
        self._asked = 0  # new calls that asked refuse() in this window
        self._asked_before = 0  # ... in the window before

    def tried(self) -> None:
        """An INVITE was sent to a destination."""
        self._tries += 1

    def shed(self, uri: str, retry_after: int) -> None:
        """Destination ``uri`` shed a call (503 + Retry-After, no Reason)."""
        self._shed += 1
        if uri not in self._shed_by:
            if not self._shed_by:
                self.retry_after = retry_after
            self._shed_by.add(uri)
        self.retry_after = min(self.retry_after, retry_after)

    def due(self, now: float) -> bool:
        """Is the window over (call :meth:`update` before :meth:`refuse`)?"""
        return now >= self._until

    def update(self, now: float, destinations: Iterable[str]) -> None:
        """Close the window: the share from what the ``destinations`` (the URIs a new
        call may be sent to now) did with the INVITEs of the window."""
        windows = 1 if now - self._until < WINDOW else int((now - self._until) / WINDOW) + 1
        tries, shed = self._tries, self._shed
        everywhere = bool(self._shed_by) and all(d in self._shed_by for d in destinations)
        asked, before = self._asked, self._asked_before
        self._asked_before, self._asked = (asked if windows == 1 else 0), 0
        if self.share > 0.0 and asked < 0.9 * before * (1.0 - self.share):
            # Fewer calls offered than the edge let through in the window before: the
            # peak is over, and the nodes' backlog, still shed against the few calls of
            # this window, would drive the share up. Let the nodes decide again.
            self.share = 0.0
        elif tries and shed and everywhere:
            q = min(1.0, shed / tries)
            self.share = min(MAX_SHARE, 1.0 - (1.0 - self.share) * (1.0 - q))
        elif shed:  # some node still sheds: give the load back a step at a time
            self.share = max(0.0, self.share - STEP_DOWN * windows)
        else:  # no node shed anything: they have room (the overload is over), halve it
            self.share *= 0.5**windows
            if self.share < STEP_DOWN:
                self.share = 0.0
        if self.share == 0.0:
            self._credit = 0.0
        self._tries = self._shed = 0
        self._shed_by.clear()
        self._until = now + WINDOW

    def refuse(self) -> bool:
        """One new (non-emergency) call: refuse it at the edge now?"""
        self._asked += 1
        share = self.share
        if share <= 0.0:
            return False
        self._credit += share
        if self._credit < 1.0 - 1e-9:  # (five fifths add up to 0.9999999999999998)
            return False
        self._credit -= 1.0
        return True
