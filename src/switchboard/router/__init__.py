"""The edge router (Kamailio's role): a transaction-stateful SIP proxy with a dispatcher.

Modules, from the wire up:

* :mod:`~switchboard.sip.fastpath` (in the SIP core) — the proxy's byte-level view of a SIP
  message, one grammar with :mod:`switchboard.sip.message` (pure);
* :mod:`~switchboard.router.dispatcher` — list file, destination sets, algorithms 0/4/8/9/10,
  OPTIONS probing state machine (pure, timers as data);
* :mod:`~switchboard.router.protection` — IP allow-list and pike-style flood detection (pure);
* :mod:`~switchboard.router.proxy` — RFC 3261 §16 proxy core: bytes + ``now`` in,
  :class:`~switchboard.router.proxy.Send` tuples out (pure, timers as data);
* :mod:`~switchboard.router.metrics`, :mod:`~switchboard.router.admin` — Prometheus and the
  FastAPI admin app;
* :mod:`~switchboard.router.service` — sockets, one timer, signals, workers
  (``switchboard router --config FILE``).
"""
