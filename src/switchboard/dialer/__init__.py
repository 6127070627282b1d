"""Campaign dialer: an Event Socket client that paces originates (CPS, concurrency, retries,
calling windows, DNC), persistent in PostgreSQL and resumable without dialing anyone twice.

Works against a Switchboard media node or a real FreeSWITCH alike: it only speaks inbound ESL.
"""
