"""Switchboard: a carrier-grade VoIP platform (SIP edge router, media nodes, ESL, billing)."""

__version__ = "0.1.0"

# The router's hot path compiled with mypyc, when a current build exists (_native.py).
from switchboard import _native

_native.install()
