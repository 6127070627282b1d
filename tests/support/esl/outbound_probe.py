"""An IVR written with a third-party ESL library's *outbound* server (the program a node's
``socket`` application connects to), printing one JSON summary line.

Run in a subprocess with the ESL clients' own venv (``make esl-client-deps``):
    python outbound_probe.py genesis|greenswitch <port> ivr|die

It listens on 127.0.0.1:<port>, prints ``READY`` and serves one call:

* ``ivr``: asks for one digit (``play_and_get_digits`` with the bundled prompt), stores it
  with ``set ivr_choice=<digit>`` and hangs up; it keeps reading (``linger``) until
  CHANNEL_HANGUP_COMPLETE and reports every event of the call in arrival order;
* ``die``: starts a playback without waiting and kills its own process (no ``exit``, no
  FIN from a clean close: the kernel closes the socket) — the node decides the call's fate.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TIMEOUT = 30.0
CONNECT_KEYS = ("Event-Name", "Unique-ID", "Caller-Destination-Number", "Socket-Mode", "Control")
PAGD = (
    "1 1 1 8000 # prompt '' ivr_choice \\d 8000"  # min max tries timeout term file invalid var re
)


def record(out: dict[str, Any], headers: Any) -> None:
    get = headers.get
    if get("Content-Type") == "text/disconnect-notice":
        out["events"].append(["disconnect-notice", get("Content-Disposition") or "", 0])
        return
    name = get("Event-Name")
    if name:
        out["events"].append([name, get("Application") or "", int(get("Event-Sequence") or 0)])
    if name == "CHANNEL_HANGUP_COMPLETE":
        out["hangup_cause"] = get("Hangup-Cause")
        out["choice"] = get("variable_ivr_choice")


def genesis(port: int, mode: str) -> dict[str, Any]:
    import asyncio

    from genesis import Outbound

    out: dict[str, Any] = {"client": "genesis", "events": []}

    async def main() -> None:
        done = asyncio.Event()

        async def handler(session: Any) -> None:
            out["connect"] = {k: session.context.get(k) for k in CONNECT_KEYS}

            async def on_event(ev: Any) -> None:
                record(out, ev)
                if ev.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE":
                    done.set()

            session.on("*", on_event)
            if mode == "die":
                await session.sendmsg("execute", "playback", "prompt")
                print(json.dumps(out), flush=True)
                os._exit(3)
            ev = await session.sendmsg(
                "execute", "play_and_get_digits", PAGD, block=True, timeout=TIMEOUT
            )
            out["digit"] = ev.get("Application-Response")
            await session.sendmsg("execute", "set", f"ivr_choice={out['digit']}", lock=True)
            await session.sendmsg("hangup", "", "NORMAL_CLEARING", lock=True)
            await asyncio.wait_for(done.wait(), TIMEOUT)

        server = Outbound(handler, "127.0.0.1", port, events=True, linger=True)
        await server.start(block=False)
        print("READY", flush=True)
        try:
            await asyncio.wait_for(done.wait(), TIMEOUT * 2)
            await asyncio.sleep(0.2)  # the handler's own return and close
        finally:
            await server.stop()

    asyncio.run(main())
    return out


def greenswitch(port: int, mode: str) -> dict[str, Any]:
    import gevent
    import gevent.event
    from greenswitch.esl import OutboundESLServer

    out: dict[str, Any] = {"client": "greenswitch", "events": []}
    done = gevent.event.Event()

    class Ivr:
        def __init__(self, session: Any) -> None:
            self.session = session

        def run(self) -> None:
            s = self.session
            out["connect"] = {k: s.session_data.get(k) for k in CONNECT_KEYS}

            def on_any(event: Any) -> None:
                record(out, event.headers)
                if event.headers.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE":
                    done.set()

            s.before_handle = on_any
            s.myevents()
            s.linger()
            if mode == "die":
                s.playback("prompt", block=False)
                print(json.dumps(out), flush=True)
                os._exit(3)
            out["digit"] = s.play_and_get_digits(
                1, 1, 1, 8000, "#", "prompt", "''", "ivr_choice", "\\d", 8000, "",
                response_timeout=TIMEOUT,
            )  # fmt: skip
            s.call_command("set", f"ivr_choice={out['digit']}")
            s.hangup("NORMAL_CLEARING")
            done.wait(TIMEOUT)

    server = OutboundESLServer("127.0.0.1", port, application=Ivr, max_connections=5)
    listener = gevent.spawn(server.listen)
    gevent.sleep(0.2)
    print("READY", flush=True)
    done.wait(TIMEOUT * 2)
    gevent.sleep(0.2)
    server.stop()
    listener.join(5)
    return out


if __name__ == "__main__":
    client, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = {"genesis": genesis, "greenswitch": greenswitch}[client](port, mode)
    print(json.dumps(result), flush=True)
