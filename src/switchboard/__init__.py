"""Switchboard: a carrier-grade VoIP platform (SIP edge router, media nodes, ESL, billing)."""

__version__ = "0.1.0"
