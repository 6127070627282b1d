"""asyncio adapters (UDP, TCP, clock) that feed the pure cores and transmit what they return."""
