"""The local model server process: llama-cpp-python's OpenAI-compatible app, on loopback.

Started by :class:`tether.models.local.LocalServer` as ``python -m tether.models.local_server``;
the native llama.cpp code runs here only, so a crash in it ends this process, not the caller's.
Beyond ``python -m llama_cpp.server`` it does one thing: it exits after ``--idle-timeout`` seconds
without a request, so a server shared by several processes never outlives its use by long.
"""

from __future__ import annotations

import argparse
import faulthandler
import threading
import time
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, required=True)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's own log")
    return parser


class _Activity:
    """When the last request ended, and how many are in flight (read by the idle watchdog)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.active = 0
        self.lock = threading.Lock()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.active else time.monotonic() - self.last


def _track(app: Any, activity: _Activity) -> None:
    async def count(request: Any, call_next: Any) -> Any:
        with activity.lock:
            activity.active += 1
        try:
            return await call_next(request)
        finally:
            with activity.lock:
                activity.active -= 1
                activity.last = time.monotonic()

    app.middleware("http")(count)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    faulthandler.enable()  # a native crash leaves its Python stack in the server's log
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model: dict[str, Any] = {
        "model": args.model,
        "n_ctx": args.n_ctx,
        "n_batch": args.n_batch,
        "seed": args.seed,
        "verbose": args.verbose,
    }
    if args.n_threads:
        model["n_threads"] = args.n_threads
        model["n_threads_batch"] = args.n_threads
    app = create_app(
        server_settings=ServerSettings(host=args.host, port=args.port),
        model_settings=[ModelSettings(**model)],
    )
    activity = _Activity()
    _track(app, activity)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )

    def watchdog() -> None:
        while not server.should_exit:
            time.sleep(min(1.0, args.idle_timeout))
            if activity.idle_for() >= args.idle_timeout:
                server.should_exit = True

    threading.Thread(target=watchdog, daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
