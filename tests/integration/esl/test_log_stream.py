"""``log <level>`` / ``nolog``: the node's log lines as FreeSWITCH ``log/data`` frames, only
to connections that asked, only up to the level asked, from any thread."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from switchboard.media.event_socket import EventSocketServer
from tests.support.esl.client import EslClient
from tests.support.net import async_wait_until


async def test_log_lines_stream_up_to_the_level_asked(esl_server: EventSocketServer) -> None:
    node_log = logging.getLogger("switchboard.media.testlog")
    node_log.setLevel(logging.DEBUG)
    quiet = await EslClient.connect(esl_server.port)  # never asked: never gets log/data
    client = await EslClient.connect(esl_server.port)
    assert (await client.command("log 6")).headers["Reply-Text"] == "+OK log level 6 [6]"
    node_log.debug("not at level 6")
    node_log.warning("trunk %s is down", "carrier-b")
    frame = await client.reply_frame(("log/data",), 5)
    h = frame.headers
    assert (h["Log-Level"], h["Log-File"], h["Log-Func"]) == (
        "4", "test_log_stream.py", "test_log_lines_stream_up_to_the_level_asked",
    )  # fmt: skip
    assert int(h["Content-Length"]) == len(frame.body)
    assert frame.text.endswith(
        " [WARNING] test_log_stream.py:" + h["Log-Line"] + " trunk carrier-b is down\n"
    )

    # a line logged from another thread arrives too, in order after the first
    worker = threading.Thread(target=node_log.error, args=("from a worker thread",))
    worker.start()
    worker.join()
    frame = await client.reply_frame(("log/data",), 5)
    assert frame.headers["Log-Level"] == "3" and "[ERR]" in frame.text
    assert "from a worker thread" in frame.text

    assert (await client.command("log debug")).headers["Reply-Text"] == "+OK log level debug [7]"
    node_log.debug("now at level 7")
    assert "now at level 7" in (await client.reply_frame(("log/data",), 5)).text
    assert (await client.command("nolog")).headers["Reply-Text"] == "+OK no longer logging"
    assert (await client.command("nolog")).headers["Reply-Text"] == "-ERR not loging"
    node_log.error("after nolog")
    await client.command("getvar x")  # a round trip: anything queued would be read by now
    assert not [f for f in client.pending if f.content_type == "log/data"]
    assert (await client.command("log bogus")).headers["Reply-Text"] == "-ERR invalid log level"

    await quiet.command("event plain HEARTBEAT")
    node_log.error("for the listeners only")
    await asyncio.sleep(0)  # the line is queued synchronously; the round trip below flushes
    await quiet.command("getvar x")
    assert not [f for f in quiet.pending if f.content_type == "log/data"]
    await client.close()
    await quiet.close()


async def test_log_debug_shows_debug_lines_the_node_does_not_log(
    esl_server: EventSocketServer,
) -> None:
    """As in FreeSWITCH, ``log debug`` gets DEBUG lines even when the node logs at INFO; the
    node's own log output (its handlers) stays at INFO, and all is as before once the
    listener leaves."""
    root = logging.getLogger()
    before = root.level
    own = logging.StreamHandler(io.StringIO())  # the node's stderr handler, no level of its own
    root.addHandler(own)
    root.setLevel(logging.INFO)
    node_log = logging.getLogger("switchboard.media.testlog2")
    try:
        client = await EslClient.connect(esl_server.port)
        await client.command("log info")
        node_log.debug("not asked for")
        assert (await client.command("log debug")).headers["Reply-Text"].startswith("+OK")
        node_log.debug("the node's debug detail")
        assert "the node's debug detail" in (await client.reply_frame(("log/data",), 5)).text
        assert "debug detail" not in own.stream.getvalue()  # type: ignore[attr-defined]
        node_log.info("an info line")
        await client.reply_frame(("log/data",), 5)
        assert "an info line" in own.stream.getvalue()  # type: ignore[attr-defined]
        assert root.level == logging.DEBUG and own.level == logging.INFO
        await client.close()  # the listener leaves: the node's levels come back
        await async_wait_until(lambda: root.level == logging.INFO, 5, "root level restored")
        assert own.level == logging.NOTSET
    finally:
        root.removeHandler(own)
        root.setLevel(before)
