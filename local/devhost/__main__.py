"""``python -m local.devhost``: run the Functions app locally (like ``func start``, default port 7071)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import uvicorn

from . import logs
from .catalog import AppLoadError, build_catalog, load_app
from .config import ConfigError, build_config
from .engine import Engine
from .schedule import ScheduleError, TimerTriggers
from .server import HostApp
from .store import InstanceStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.devhost", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="app root (holds host.json)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument(
        "--settings", type=Path, default=None, help="local settings file (default: ROOT/local.settings.json)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logs.configure(args.log_level.upper())
    root = args.root.resolve()
    try:
        config = build_config(
            root, (args.settings or root / "local.settings.json").resolve(), args.host, args.port, args.app
        )
        catalog = build_catalog(load_app(args.app, root))
        timers = TimerTriggers(catalog.timers, config)
    except (ConfigError, AppLoadError, ScheduleError, ValueError) as exc:
        logs.event("host.config_error", 40, error=str(exc))
        print(f"devhost: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, catalog, timers))


async def _serve(config, catalog, timers) -> int:  # type: ignore[no-untyped-def]
    store = InstanceStore(config.storage_connection, config.hub)
    try:
        await store.open()
    except Exception as exc:
        print(
            f"devhost: cannot reach Table Storage ({type(exc).__name__}); is Azurite running?",
            file=sys.stderr,
        )
        await store.close()
        return 3
    engine = Engine(store, catalog, config)
    app = HostApp(config, catalog, engine, timers)
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            lifespan="on",
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # SIGINT and SIGTERM both stop accepting requests, then run the lifespan shutdown (timer
        # triggers and activities stopped, storage closed) and exit 0.
        loop.add_signal_handler(sig, server.request_exit, sig)
    starter = asyncio.ensure_future(_start_timers_when_listening(server, timers))
    try:
        await server.serve()
    finally:
        starter.cancel()
        await store.close()
    return 0 if server.started else 1


async def _start_timers_when_listening(server: uvicorn.Server, timers: TimerTriggers) -> None:
    # As on the Functions host, timer triggers (runOnStartup ones included) start once the host
    # serves requests: a trigger that uses the Durable client calls back into this process.
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.02)
    timers.start()


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it captured once it has shut down (so the process dies of it);
    the devhost handles SIGINT/SIGTERM itself and exits cleanly instead."""

    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    def request_exit(self, sig: signal.Signals) -> None:
        logs.event("host.stopping", signal=sig.name)
        self.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
