"""The `switchboard` command: a thin layer over each service's ``run()``.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,
3 a service failed to start (port in use, database unreachable).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from switchboard import __version__
from switchboard import config as config_mod
from switchboard.lifecycle import ExitCode

app = typer.Typer(
    help="Switchboard: carrier-grade VoIP platform (router, media nodes, ESL, billing, dialer).",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> config_mod.Config:
    """Load the configuration or exit 2 with a message naming the bad key."""
    try:
        return config_mod.load(path, overrides=overrides)
    except config_mod.ConfigError as exc:
        err.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


def not_built(what: str) -> None:
    """Exit 2 for a documented command whose service is not in this build yet."""
    err.print(
        f"[yellow]{what}[/yellow] is not available in this build of Switchboard {__version__}."
    )
    raise typer.Exit(ExitCode.USAGE)


@app.callback()
def _root() -> None:
    """Switchboard: carrier-grade VoIP platform."""


@app.command()
def version() -> None:
    """Print the version."""
    print(f"switchboard {__version__}")


@app.command()
def up(
    config: ConfigOpt = None,
    media_nodes: Annotated[
        int | None, typer.Option("--media-nodes", "-n", help="Media nodes to run (default 2).")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Carrier simulator and a short mix of calls.")
    ] = False,
) -> None:
    """Run the whole platform on this machine: router, media nodes, embedded PostgreSQL."""
    from switchboard import supervisor

    overrides = {"platform": {"media_nodes": media_nodes}} if media_nodes is not None else None
    cfg = load_config(config, overrides)
    raise typer.Exit(supervisor.main(cfg, config_path=config, demo=demo))


@app.command()
def router(config: ConfigOpt = None) -> None:
    """Run the edge router only (SIP proxy, dispatcher, ACL, pike, admin API)."""

    from switchboard.router import service

    cfg = load_config(config)
    raise typer.Exit(service.run(cfg, config))


@app.command()
def media(
    config: ConfigOpt = None,
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Node name; media-N listens on SIP 508N, ESL 802N, admin 808N unless configured.",
        ),
    ] = "media-1",
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            hidden=True,
            help="Warm spare (switchboard up): import everything, then wait for one line "
            "of JSON environment on stdin before starting; exit 0 at end of input.",
        ),
    ] = False,
    reap: Annotated[
        bool,
        typer.Option(
            "--reap",
            help="The node NAME is down for good: end the calls in its journal (BYE to "
            "both far ends, CDRs with cause NETWORK_OUT_OF_ORDER) and exit. Does nothing "
            "while the node runs. `switchboard up` does this after [media] recovery_timeout.",
        ),
    ] = False,
) -> None:
    """Run one media node (SIP UA/B2BUA, RTP, dialplan, Event Socket, /metrics)."""

    from switchboard.media import node

    if reap:  # --standby: ready up to the journal, then waits for one line on stdin
        raise typer.Exit(node.reap(load_config(config), name, standby=standby))
    if standby:
        import json
        import os
        import time

        node.preload()  # Python's start-up, paid before the node is needed
        print("warm spare ready", flush=True)
        go = sys.stdin.readline()
        if not go:
            raise typer.Exit(ExitCode.OK)
        os.environ.update(json.loads(go))
        os.environ["SWITCHBOARD_GO_AT"] = repr(time.time())  # the restart's timing line
    cfg = load_config(config)
    raise typer.Exit(node.run(cfg, name))


# Billing: db, rates, accounts, cdr, report, invoice (switchboard.billing.cli).
@app.command()
def console(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Event Socket host.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Event Socket port (default: [esl] listen, else 8021).")
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Event Socket password (default: [esl] password).")
    ] = None,
    execute: Annotated[
        list[str] | None,
        typer.Option("--execute", "-x", help="Run this API command, print the answer, exit."),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", "-l", help="Log lines shown (console…debug, none).")
    ] = "info",
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours.")] = False,
) -> None:
    """fs_cli-style console over the Event Socket of a media node or FreeSWITCH."""
    from switchboard import console as console_mod

    cfg = load_config(config)
    listen = cfg.esl.listen or "127.0.0.1:8021"
    chosen_port = port if port is not None else int(listen.rpartition(":")[2] or 8021)
    level = None if log_level.lower() in ("none", "off", "no") else log_level
    raise typer.Exit(
        console_mod.main(
            host,
            chosen_port,
            password if password is not None else cfg.esl.password,
            execute or [],
            log_level=level,
            colour=console_mod.colour_wanted(no_color),
        )
    )


@app.command()
def status(
    config: ConfigOpt = None,
    url: Annotated[
        str | None,
        typer.Option(help="Router admin URL (default: http://<[router] admin>)."),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between two refreshes.")] = 2.0,
    once: Annotated[
        bool,
        typer.Option("--once", help="Print the picture once and exit (3: router unreachable)."),
    ] = False,
) -> None:
    """The status page in the terminal: KPIs, 15-minute sparklines, destinations, trunks,
    processes, recent calls, campaigns — refreshed in place until Ctrl-C."""
    from switchboard import status_term

    cfg = load_config(config)
    base = url or f"http://{cfg.router.admin}"
    raise typer.Exit(status_term.main(base, interval, once, cfg.status.title))


from switchboard.billing.cli import register as _register_billing  # noqa: E402

_register_billing(app, load_config)

from switchboard.dialer.cli import register as _register_dialer  # noqa: E402

_register_dialer(app, load_config)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
