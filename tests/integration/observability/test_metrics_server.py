"""The standalone /metrics server over real TCP: garbage, 404, a half request, then 200."""

from __future__ import annotations

import asyncio

from switchboard.observability.metrics import DialerMetrics, new_registry, serve_metrics


async def _http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return data


async def test_serve_metrics_standalone_survives_garbage() -> None:
    reg = new_registry("dialer")
    DialerMetrics.create(reg).originates.labels(campaign="spring").inc()
    server = await serve_metrics("127.0.0.1", 0, reg)
    port = server.sockets[0].getsockname()[1]
    try:
        bad = await _http(port, b"\x00\xff garbage\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400")
        missing = await _http(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404")
        # a client that sends half a request and vanishes
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /met")
        w.close()
        ok = await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b'switchboard_dialer_originates_total{campaign="spring"} 1.0' in body
        assert f"Content-Length: {len(body)}".encode() in head
    finally:
        server.close()
        await server.wait_closed()


def test_process_series_count_the_descriptors_a_node_opens() -> None:
    """process_open_fds follows the sockets this process opens (counted from the kernel's
    /proc/self/fd size, not a listing), process_max_fds is the soft limit, and each
    process_* series is there once (the global registry's own collector is not bridged
    in a second time)."""
    import resource
    import socket

    from prometheus_client.parser import text_string_to_metric_families

    from switchboard.observability.metrics import render

    def scrape() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for fam in text_string_to_metric_families(render(reg).decode()):
            for s in fam.samples:
                if s.name.startswith("process_"):
                    out.setdefault(s.name, []).append(s.value)
        return out

    reg = new_registry("media")
    before = scrape()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
    try:
        after = scrape()
    finally:
        for s in socks:
            s.close()
    assert all(len(v) == 1 for v in after.values()), after
    assert after["process_open_fds"][0] - before["process_open_fds"][0] == 300
    assert after["process_max_fds"][0] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert after["process_resident_memory_bytes"][0] > 10e6
    assert {"process_cpu_seconds_total", "process_start_time_seconds"} <= set(after)
