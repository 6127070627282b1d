"""Media applications on a channel's RTP stream: playback, echo, record, record_session,
play_and_get_digits, ivr, transfer, DTMF and tones (mod_dptools / mod_ivr names).

Each runs on ``session.media`` (an :class:`~switchboard.media.rtp_endpoint.RtpEndpoint`) and
the DTMF queue ``session.dtmf`` (fed from RFC 4733, SIP INFO and in-band detection). A hangup
cancels the running application; ``finally`` blocks leave the stream idle and files closed.

Sound names: ``prompt`` (the bundled prompt), a path (absolute, or relative to
``[media] sounds_dir``), ``tone_stream://%(on_ms,off_ms,freq[,freq2])`` and
``silence_stream://<ms>`` as in FreeSWITCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from switchboard.media.dialplan import parse_action
from switchboard.media.rtp_endpoint import RtpEndpoint, unbridge
from switchboard.media.sounds import PROMPT_PATH
from switchboard.rtp.source import Prompt, WavRecorder, silence_prompt, tone_prompt
from switchboard.rtp.wav import WavError

if TYPE_CHECKING:
    from switchboard.media.core import Session, Switch


log = logging.getLogger(__name__)

DEFAULT_TERMINATORS = "#"


@dataclass
class IvrMenu:
    """One menu (see :class:`switchboard.media.settings.IvrMenuSection`)."""

    greeting: str = "prompt"
    invalid: str = ""
    timeout: float = 5.0
    max_failures: int = 3
    exit_action: str = "hangup NORMAL_CLEARING"
    entries: dict[str, str] = field(default_factory=dict)


@dataclass
class AppConfig:
    """What media applications read from the node configuration."""

    sounds_dir: Path | None = None
    recordings_dir: Path = Path("recordings")
    ivr_menus: dict[str, IvrMenu] = field(default_factory=dict)
    energy_level: int = 100
    originate_timeout: float = 60.0


def config_of(sw: Switch) -> AppConfig:
    cfg = getattr(sw, "app_config", None)
    if cfg is None:
        cfg = AppConfig()
        sw.app_config = cfg  # type: ignore[attr-defined]
    return cfg


# ---------------------------------------------------------------------------- sounds
_PROMPTS: dict[str, Prompt] = {}


def load_prompt(name: str, cfg: AppConfig) -> Prompt:
    """Resolve a sound name to a Prompt (cached). Raises FileNotFoundError / WavError."""
    cached = _PROMPTS.get(name)
    if cached is not None:
        return cached
    prompt: Prompt
    m = re.fullmatch(r"tone_stream://%\((\d+),(\d+),([\d.]+)(?:,([\d.]+))?\)", name)
    if m:
        freqs = [float(m[3])] + ([float(m[4])] if m[4] else [])
        prompt = tone_prompt(freqs, on_ms=int(m[1]) or 20, off_ms=int(m[2]))
    elif name.startswith("silence_stream://"):
        ms = int(name.split("://", 1)[1] or "1000")
        frames = max(1, ms // 20)
        prompt = Prompt(np.zeros(160 * frames, np.int16))
    else:
        path: Path
        if name == "prompt":
            path = (cfg.sounds_dir / "prompt.wav") if cfg.sounds_dir else PROMPT_PATH
            if not path.exists():
                path = PROMPT_PATH
        else:
            path = Path(name)
            if not path.is_absolute() and cfg.sounds_dir is not None:
                path = cfg.sounds_dir / path
        prompt = Prompt.from_wav(path.read_bytes())
    _PROMPTS[name] = prompt
    return prompt


# ---------------------------------------------------------------------------- DTMF helpers
def _pushback(s: Session) -> deque[str]:
    buf = s.data.get("dtmf_pushback")
    if buf is None:
        buf = s.data["dtmf_pushback"] = deque()
    return buf


async def next_digit(s: Session, timeout: float | None) -> str | None:
    """The next DTMF digit, or None after ``timeout`` seconds (None = wait forever)."""
    buf = _pushback(s)
    if buf:
        return buf.popleft()
    try:
        if timeout is None:
            return await s.dtmf.get()
        return await asyncio.wait_for(s.dtmf.get(), max(timeout, 0.0))
    except TimeoutError:
        return None


def flush_digits(s: Session) -> None:
    _pushback(s).clear()
    while not s.dtmf.empty():
        s.dtmf.get_nowait()


def endpoint_of(s: Session) -> RtpEndpoint:
    if s.media is None:
        raise RuntimeError("channel has no media")
    ep: RtpEndpoint = s.media
    return ep


async def play(s: Session, name: str, *, terminators: str = "", interrupt: bool = False) -> str:
    """Play ``name``; returns the digit that stopped it ("" when it played to the end).

    A digit in ``terminators`` is consumed (``playback_terminator_used``); with
    ``interrupt`` any digit stops playback and stays queued for the caller to read.
    """
    sw = s.switch
    cfg = config_of(sw)
    ep = endpoint_of(s)
    prompt = load_prompt(name, cfg)
    done = ep.play(prompt)
    headers = {"Playback-File-Path": name}
    sw._fire("PLAYBACK_START", s, headers)
    stopped_by = ""
    try:
        while not done.done():
            if not (terminators or interrupt):
                await asyncio.shield(done)
                break
            getter = asyncio.ensure_future(next_digit(s, None))
            waits: set[asyncio.Future[Any]] = {done, getter}
            finished, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                digit = getter.result()
                if digit is None:
                    continue
                if digit in terminators:
                    stopped_by = digit
                    s.channel.set_var("playback_terminator_used", digit)
                    break
                if interrupt:
                    _pushback(s).appendleft(digit)
                    stopped_by = digit
                    break
            else:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
    finally:
        if not done.done():
            ep.stop_playback()
        sw._fire(
            "PLAYBACK_STOP", s, {**headers, "Playback-Status": "break" if stopped_by else "done"}
        )
    return stopped_by


# ---------------------------------------------------------------------------- applications
async def playback(s: Session, arg: str) -> str | None:
    """``playback <sound>``: blocks until played; ``playback_terminators`` interrupt it."""
    await s.switch.do_pre_answer(s) if not s.channel.answered else None
    terms = s.channel.variables.get("playback_terminators", "")
    if terms == "none":
        terms = ""
    try:
        await play(s, arg.strip() or "prompt", terminators=terms)
    except (OSError, WavError, ValueError) as exc:
        log.warning("channel %s: playback %s failed: %s", s.uuid, arg, exc)
        return f"-ERR {exc}"
    return "FILE PLAYED"


async def echo(s: Session, arg: str) -> str | None:
    """``echo``: every received packet is sent back (RFC 4733 events included)."""
    ep = endpoint_of(s)
    ep.echo()
    try:
        await s.ended.wait()
    finally:
        unbridge(ep, ep)
    return None


def _recordings_path(s: Session, arg: str) -> Path:
    p = Path(arg)
    if not p.is_absolute():
        p = config_of(s.switch).recordings_dir / p
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


async def record(s: Session, arg: str) -> str | None:
    """``record <path> [<time_limit_secs>]``: the caller's audio to a WAV; ends on the limit,
    a terminator digit (``playback_terminators``, default ``#``) or hangup."""
    parts = arg.split()
    if not parts:
        return "-ERR usage: record <path> [time_limit_secs]"
    path = _recordings_path(s, parts[0])
    limit = float(parts[1]) if len(parts) > 1 and parts[1].replace(".", "", 1).isdigit() else None
    terms = s.channel.variables.get("playback_terminators", DEFAULT_TERMINATORS)
    ep = endpoint_of(s)
    f = path.open("wb")
    rec = WavRecorder(f, rate=ep.codec.sample_rate)
    ep.record(rec)
    headers = {"Record-File-Path": str(path)}
    s.switch._fire("RECORD_START", s, headers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit if limit else None
    try:
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            digit = await next_digit(s, remaining)
            if digit is None:
                break
            if digit in terms:
                s.channel.set_var("playback_terminator_used", digit)
                break
    finally:
        ep.record(None)
        rec.close()
        f.close()
        s.channel.set_var("record_seconds", str(rec.frames_written // max(rec.rate, 1)))
        s.switch._fire("RECORD_STOP", s, headers)
    return None


async def record_session(s: Session, arg: str) -> str | None:
    """``record_session <path>``: non-blocking recording of the caller's audio and, while
    bridged, the other party's (two WAV channels with ``RECORD_STEREO=true``, else mixed);
    stops at hangup or ``stop_record_session``. Uses the stream's receive sink, so it is
    not combined with ``record`` or ``conference`` on the same channel."""
    path = _recordings_path(s, arg.split()[0] if arg.strip() else f"{s.uuid}.wav")
    ep = endpoint_of(s)
    f = path.open("wb")
    split = s.channel.var_true("RECORD_STEREO")
    rec = WavRecorder(f, rate=ep.codec.sample_rate, legs=2, split=split)
    s.data["record_session"] = rec
    ep.record(rec.leg(0))
    headers = {"Record-File-Path": str(path)}
    s.switch._fire("RECORD_START", s, headers)
    stop = s.data.setdefault("record_session_stop", asyncio.Event())

    async def stopper() -> None:
        waits = [asyncio.ensure_future(s.ended.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not ep.closed:
            ep.record(None)
        partner = s.bridged_to
        if partner is not None and partner.media is not None and not partner.media.closed:
            partner.media.record(None)
        rec.close()
        f.close()
        s.data.pop("record_session", None)
        s.switch._fire("RECORD_STOP", s, headers)

    task = asyncio.ensure_future(stopper())
    s.data["record_session_task"] = task
    return None


async def stop_record_session(s: Session, arg: str) -> str | None:
    ev = s.data.get("record_session_stop")
    if ev is not None:
        ev.set()
    return None


async def play_and_get_digits(s: Session, arg: str) -> str | None:
    """``<min> <max> <tries> <timeout_ms> <terminators> <file> <invalid_file> <var_name>
    <regexp> [<digit_timeout_ms>] [<failure_ext>]`` (mod_dptools). The digits go in
    ``var_name`` (and ``read_result`` = success/failure/timeout)."""
    p = arg.split()
    if len(p) < 9:
        return "-ERR usage: play_and_get_digits min max tries timeout terminators file invalid var regexp"
    try:
        mn, mx, tries, timeout_ms = int(p[0]), int(p[1]), int(p[2]), int(p[3])
        digit_timeout = int(p[9]) / 1000 if len(p) > 9 else timeout_ms / 1000
    except ValueError:
        return "-ERR invalid numbers"
    terminators, prompt, invalid, var, regexp = p[4], p[5], p[6], p[7], p[8]
    failure_ext = p[10] if len(p) > 10 else ""
    try:
        pattern = re.compile(regexp)
    except re.error:
        return "-ERR invalid regexp"
    ch = s.channel
    for _ in range(max(1, tries)):
        await play(s, prompt, interrupt=True)
        digits = ""
        first = True
        while len(digits) < mx:
            d = await next_digit(s, timeout_ms / 1000 if first else digit_timeout)
            first = False
            if d is None:
                break
            if d in terminators:
                break
            digits += d
        if len(digits) >= mn and pattern.fullmatch(digits):
            ch.set_var(var, digits)
            ch.set_var("read_result", "success")
            return digits
        ch.set_var("read_result", "failure" if digits else "timeout")
        if invalid and invalid != "''" and digits:
            with contextlib.suppress(OSError, WavError, ValueError):
                await play(s, invalid)
    ch.set_var(var, "")
    if failure_ext and failure_ext != "''":
        s.switch.transfer(s.uuid, failure_ext)
    return None


async def ivr(s: Session, arg: str) -> str | None:
    """``ivr <menu>``: greeting, digit → entry action, timeout/invalid with retries."""
    sw = s.switch
    menu = config_of(sw).ivr_menus.get(arg.strip())
    if menu is None:
        log.warning("channel %s: no IVR menu %r", s.uuid, arg)
        return "-ERR no such menu"
    if not s.channel.answered:
        await sw.do_answer(s)
    keys = menu.entries
    longest = max((len(k) for k in keys), default=1)
    failures = 0
    while failures < menu.max_failures and not s.is_hungup:
        await play(s, menu.greeting, interrupt=True)
        digits = ""
        while True:
            d = await next_digit(s, menu.timeout if not digits else 2.0)
            if d is None:
                break
            digits += d
            if (
                digits in keys
                or len(digits) >= longest
                or not any(k.startswith(digits) for k in keys)
            ):
                break
        if not digits:
            failures += 1
            continue
        action = keys.get(digits)
        if action is None:
            failures += 1
            s.channel.set_var("ivr_invalid_digits", digits)
            with contextlib.suppress(OSError, WavError, ValueError):
                await play(s, menu.invalid or "tone_stream://%(300,0,480,620)")
            continue
        failures = 0
        s.channel.set_var("ivr_menu_status", "success")
        s.channel.set_var("ivr_selection", digits)
        sw._fire(
            "CUSTOM",
            s,
            {"Event-Subclass": "ivr::selection", "IVR-Menu": arg.strip(), "IVR-Digits": digits},
        )
        await run_inline(s, action)
        if s.transfer_to is not None or s.is_hungup:
            return None
    s.channel.set_var("ivr_menu_status", "failure")
    await run_inline(s, menu.exit_action)
    return None


async def run_inline(s: Session, action: str) -> str | None:
    """Run one ``"app arg"`` action inside the current application (IVR entries)."""
    app, arg = parse_action(action)
    fn = s.switch.apps.get(app)
    if fn is None:
        log.warning("channel %s: IVR action %r: unknown application", s.uuid, action)
        return None
    return await fn(s, arg)


async def transfer(s: Session, arg: str) -> str | None:
    """``transfer <extension> [<dialplan> <context>]``: route again through the dialplan."""
    parts = arg.split()
    if not parts:
        return "-ERR usage: transfer <extension>"
    s.transfer_to = parts[0]
    if len(parts) > 2:
        s.channel.profile.dialplan, s.channel.profile.context = parts[1], parts[2]
    s.apps.clear()
    s.parked = False
    return None


async def send_dtmf(s: Session, arg: str) -> str | None:
    digits = arg.split("@")[0].strip()
    if s.leg is not None and digits:
        await s.leg.send_dtmf(digits, 100)
    return None


async def start_dtmf(s: Session, arg: str) -> str | None:
    """In-band DTMF detection on the caller's audio (carriers without telephone-event)."""
    endpoint_of(s).detect_inband_dtmf(True)
    return None


async def gentones(s: Session, arg: str) -> str | None:
    """``gentones <freq>[+<freq2>]`` — simplified: one second of the tone."""
    freqs = [f for f in re.split(r"[+,]", arg.strip().lstrip("%(").rstrip(")")) if f]
    try:
        values = [float(f) for f in freqs][-2:] or [440.0]
    except ValueError:
        return "-ERR bad tone"
    prompt = tone_prompt(values, on_ms=1000)
    await endpoint_of(s).play(prompt)
    return None


async def silence(s: Session, arg: str) -> str | None:
    await endpoint_of(s).play(silence_prompt(), loops=max(1, int(arg or "50")))
    return None
