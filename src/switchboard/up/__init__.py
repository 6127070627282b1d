"""`switchboard up` helpers: the demo carrier simulator and call mix."""
