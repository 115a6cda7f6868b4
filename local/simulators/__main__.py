"""``python -m local.simulators``: serve every simulator from one process (port 7081, loopback only)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import uvicorn
from starlette.applications import Starlette

from .app import CONTROL_PREFIX, build_app
from .bot_tokens import METADATA_PATH
from .process import DEFAULT_PORT, SETTINGS

# The simulators hold test data and have an unauthenticated control API: never listen beyond this machine.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.simulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="log level for the per-call log lines")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK:
        print(f"simulators: --host must be a loopback address {LOOPBACK}, got {args.host!r}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_serve(args.host, args.port))


async def _serve(host: str, port: int) -> int:
    app = build_app()
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_config=None, log_level="warning", access_log=False
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)
    announcer = asyncio.ensure_future(_announce(server, app, host, port))
    try:
        await server.serve()
    finally:
        announcer.cancel()
    return 0 if server.started else 1


async def _announce(server: uvicorn.Server, app: Starlette, host: str, port: int) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.02)
    origin = f"http://{'[::1]' if host == '::1' else host}:{port}"
    sims = app.state.simulators
    lines = [f"simulators listening on {origin} (control API {origin}{CONTROL_PREFIX}); Ctrl-C to stop"]
    lines += [f"  {SETTINGS[name]}={url}" for name, url in sims.base_urls(origin).items()]
    lines.append(f"  BOT_OPENID_METADATA_URL={origin}{METADATA_PATH}")
    print("\n".join(lines), flush=True)


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal it caught once shut down (the process then dies of it); we handle SIGINT
    and SIGTERM ourselves so that a stop is a clean exit 0."""

    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    def request_exit(self) -> None:
        self.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
