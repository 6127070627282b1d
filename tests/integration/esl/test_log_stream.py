"""``log <level>`` / ``nolog``: the node's log lines as FreeSWITCH ``log/data`` frames, only
to connections that asked, only up to the level asked, from any thread."""

from __future__ import annotations

import asyncio
import logging
import threading

from switchboard.media.event_socket import EventSocketServer
from tests.support.esl.client import EslClient


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
