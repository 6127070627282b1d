"""Pure SIP core (RFC 3261): messages, URIs, headers, framing, transactions, dialogs.

No asyncio, sockets, clock or database here; `tests/unit/test_layering.py` keeps it so.
"""
