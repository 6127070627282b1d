"""Drive the Event Socket with genesis (asyncio) and print one JSON summary line.

Run in a subprocess with the ESL clients' own venv (``make esl-client-deps``), so genesis's
pins (typer, rich, uvicorn, fastapi …) never reach the project's environment:
    python genesis_probe.py call <port> <caller-id> <dial string> <destination> <kill: 0|1>
    python genesis_probe.py concurrent <port> <connections> <per connection> <dial prefix> <dest>

``call``: wrong password, api status, subscribe + filters, one ``bgapi originate`` and that
call's events. ``concurrent``: <connections> genesis connections, <per connection>
``bgapi originate <dial prefix><i><jjj> <dest>`` each, all in flight at once; then
``show channels count`` and ``hupall``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from genesis import Inbound
from genesis.exceptions import AuthenticationError

TIMEOUT = 30.0


async def call(port: int, cid: str, dial: str, dest: str, kill: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"client": "genesis", "events": []}
    try:
        async with Inbound("127.0.0.1", port, "wrong-password"):
            out["bad_auth"] = "accepted"
    except AuthenticationError as exc:
        out["bad_auth"] = f"AuthenticationError: {exc}"
    done = asyncio.Event()
    async with Inbound("127.0.0.1", port, "ClueCon") as client:
        out["status"] = (await client.send("api status")).body.split("\n")[0]
        jobs: dict[str, str] = {}

        async def on_event(ev: Any) -> None:
            name = ev.get("Event-Name")
            if name == "BACKGROUND_JOB":
                jobs[ev.get("Job-UUID")] = ev.body or ""
                return
            out["events"].append(
                {
                    "name": name, "uuid": ev.get("Unique-ID"), "cause": ev.get("Hangup-Cause"),
                    "billsec": ev.get("variable_billsec"), "duration": ev.get("variable_duration"),
                    "cid": ev.get("Caller-Caller-ID-Number"),
                }
            )  # fmt: skip
            if name == "CHANNEL_ANSWER" and kill:
                out["kill"] = (await client.send(f"api uuid_kill {ev.get('Unique-ID')}")).body
            if name == "CHANNEL_HANGUP_COMPLETE":
                done.set()

        for name in (
            "CHANNEL_ANSWER",
            "CHANNEL_HANGUP",
            "CHANNEL_HANGUP_COMPLETE",
            "BACKGROUND_JOB",
        ):
            client.on(name, on_event)
        await client.send(
            "events plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
        )
        out["filter"] = (await client.send(f"filter Caller-Caller-ID-Number {cid}"))["Reply-Text"]
        await client.send("filter Event-Name BACKGROUND_JOB")
        reply = await client.send(
            f"bgapi originate {{origination_caller_id_number={cid}}}{dial} {dest}"
        )
        out["job_uuid"] = reply.get("Job-UUID")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while out["job_uuid"] not in jobs and loop.time() < deadline:
            await asyncio.sleep(0.02)
        out["bgapi"] = jobs.get(out["job_uuid"])
        if str(out["bgapi"]).startswith("+OK"):
            await asyncio.wait_for(done.wait(), max(0.1, deadline - loop.time()))
            await asyncio.sleep(0.05)
    return out


async def concurrent(
    port: int, connections: int, per_connection: int, prefix: str, dest: str
) -> dict[str, Any]:
    total = connections * per_connection
    results: dict[str, str] = {}
    all_done = asyncio.Event()

    async def on_job(ev: Any) -> None:
        results[ev.get("Job-UUID")] = ev.body or ""
        if len(results) == total:
            all_done.set()

    out: dict[str, Any] = {"client": "genesis", "connections": connections}
    clients = [Inbound("127.0.0.1", port, "ClueCon") for _ in range(connections)]
    started: list[Inbound] = []
    try:
        for client in clients:
            await client.start()
            started.append(client)
            client.on("BACKGROUND_JOB", on_job)
            await client.send("events plain BACKGROUND_JOB")
        replies = await asyncio.gather(
            *(
                client.send(f"bgapi originate {prefix}{i}{j:03d} {dest}")
                for i, client in enumerate(clients)
                for j in range(per_connection)
            )
        )
        out["replies"] = [
            {"job_uuid": r.get("Job-UUID"), "reply_text": r.get("Reply-Text")} for r in replies
        ]
        try:
            await asyncio.wait_for(all_done.wait(), TIMEOUT)
            out["timed_out"] = False
        except TimeoutError:
            out["timed_out"] = True
        out["results"] = dict(results)
        out["count"] = (await clients[0].send("api show channels count")).body
        out["hupall"] = (await clients[0].send("api hupall")).body
    finally:
        for client in started:
            await client.stop()
    return out


def main() -> int:
    mode, port, *args = sys.argv[1:]
    if mode == "call":
        cid, dial, dest, kill = args
        out = asyncio.run(call(int(port), cid, dial, dest, kill == "1"))
    elif mode == "concurrent":
        connections, per_connection, prefix, dest = args
        out = asyncio.run(
            concurrent(int(port), int(connections), int(per_connection), prefix, dest)
        )
    else:
        print(f"unknown mode {mode!r}: call | concurrent", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
