"""Drive the Event Socket with greenswitch (gevent) and print one JSON summary line.

Run in a subprocess with the ESL clients' own venv (``make esl-client-deps``), so gevent
never touches pytest's process and greenswitch's dependencies stay out of the project's:
    python greenswitch_probe.py <port> <caller-id> <dial string> <destination> <kill: 0|1>
"""

from __future__ import annotations

import json
import sys

import gevent
import gevent.event
import greenswitch


def main() -> int:
    port, cid, dial, dest, kill = sys.argv[1:6]
    out: dict[str, object] = {"client": "greenswitch", "events": []}
    bad = greenswitch.InboundESL("127.0.0.1", int(port), "wrong-password")
    try:
        bad.connect()
        out["bad_auth"] = "accepted"
    except ValueError as exc:
        out["bad_auth"] = f"ValueError: {exc}"
    fs = greenswitch.InboundESL("127.0.0.1", int(port), "ClueCon")
    fs.connect()
    out["status"] = fs.send("api status").data.split("\n")[0]
    done = gevent.event.Event()
    jobs: list[str] = []
    events: list[dict[str, str | None]] = []

    def on_event(ev: greenswitch.esl.ESLEvent) -> None:
        h = ev.headers
        name = h.get("Event-Name")
        if name == "BACKGROUND_JOB":
            jobs.append(h.get("Job-UUID") or "")
            return
        events.append(
            {
                "name": name, "uuid": h.get("Unique-ID"), "cause": h.get("Hangup-Cause"),
                "billsec": h.get("variable_billsec"), "duration": h.get("variable_duration"),
                "cid": h.get("Caller-Caller-ID-Number"),
            }
        )  # fmt: skip
        if name == "CHANNEL_ANSWER" and kill == "1":
            gevent.spawn(lambda: fs.send(f"api uuid_kill {h.get('Unique-ID')}"))
        if name == "CHANNEL_HANGUP_COMPLETE":
            done.set()

    for name in ("CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"):
        fs.register_handle(name, on_event)
    fs.send("event plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
    out["filter"] = fs.send(f"filter Caller-Caller-ID-Number {cid}").data
    fs.send("filter Event-Name BACKGROUND_JOB")
    reply = fs.send("bgapi status")
    out["bgapi_reply"] = reply.data
    out["bgapi_job"] = reply.headers.get("Job-UUID")
    out["originate"] = fs.send(
        f"api originate {{origination_caller_id_number={cid}}}{dial} {dest}"
    ).data
    if str(out["originate"]).startswith("+OK"):
        done.wait(timeout=20)
    gevent.sleep(0.05)
    out["events"] = events
    out["jobs"] = jobs
    fs.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
