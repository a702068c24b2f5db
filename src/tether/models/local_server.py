"""The local model server process: llama-cpp-python's OpenAI-compatible app, on loopback.

Started by :class:`tether.models.local.LocalServer` as ``python -m tether.models.local_server``;
the native llama.cpp code runs here only, so a crash in it ends this process, not the caller's.
Beyond ``python -m llama_cpp.server`` it does one thing: it exits after ``--idle-timeout`` seconds
without a request, so a server shared by several processes never outlives its use by long.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import math
import os
import sys
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
    parser.add_argument(
        "--n-threads", type=int, default=None, help="default: the cores idle at start (at least 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's own log")
    return parser


def check_grammar_last(llama_cls: Any) -> None:
    """Make greedy sampling under a grammar test the grammar on the best token first.

    llama-cpp-python samples every token through the chain penalties -> grammar -> greedy, and the
    grammar step matches each of the vocabulary's 49,152 tokens against the grammar: 15-20% of
    the CPU time of a support-desk step. With temperature 0 the chosen token is the
    highest-scoring one the grammar allows, so when the highest-scoring token overall is allowed
    (19 tokens in 20 here) it is the answer, and only otherwise is the whole vocabulary filtered.
    The tokens chosen are the same; any other sampling setting takes the library's own path.
    """
    import llama_cpp
    import numpy as np

    if getattr(llama_cls.sample, "_tether_grammar_last", False):
        return
    library_sample = llama_cls.sample

    def sample(self: Any, *args: Any, **kwargs: Any) -> Any:
        chain = self._sampler.sampler if self._sampler is not None else None
        if (
            args
            or chain is None
            or kwargs.get("temp") != 0.0
            or kwargs.get("grammar") is None
            or kwargs.get("logits_processor") is not None
            or llama_cpp.llama_sampler_chain_n(chain) != 3  # penalties, grammar, greedy
        ):
            return library_sample(self, *args, **kwargs)
        idx = kwargs.get("idx")
        row = idx - self.n_tokens if idx is not None else -1
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._ctx.ctx, row), shape=(self._n_vocab,)
        )
        candidates = self._candidates
        candidates.copy_logits(logits)
        everything = ctypes.byref(candidates.candidates)
        llama_cpp.llama_sampler_apply(llama_cpp.llama_sampler_chain_get(chain, 0), everything)
        grammar = llama_cpp.llama_sampler_chain_get(chain, 1)
        scores = candidates.candidates_data.logit
        token = int(np.argmax(scores))  # the first of equal maxima, as greedy picks
        best = (llama_cpp.llama_token_data * 1)(
            llama_cpp.llama_token_data(token, float(scores[token]), 0.0)
        )
        one = llama_cpp.llama_token_data_array(data=best, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(one))
        if math.isinf(best[0].logit):  # not allowed: filter the whole vocabulary
            llama_cpp.llama_sampler_apply(grammar, everything)
            token = int(np.argmax(scores))
        llama_cpp.llama_sampler_accept(chain, token)  # advances penalties and grammar
        return token

    sample._tether_grammar_last = True  # type: ignore[attr-defined]
    llama_cls.sample = sample


def idle_cores() -> int:
    """The cores not busy with other work when the server starts (by the load average), >= 1.

    llama.cpp's threads wait for each other after every operation of every token: a thread that
    shares its core with another process stalls the rest, and on a busy machine one thread gets
    more done than two (a step of the support-desk agent took a third longer with two).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


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
    import llama_cpp
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model: dict[str, Any] = {
        "model": args.model,
        "n_ctx": args.n_ctx,
        "n_batch": args.n_batch,
        "seed": args.seed,
        "verbose": args.verbose,
        # the server's default computes the logits of every prompt token (the output layer is a
        # fifth of the model) and copies them out; sampling needs only the last
        "logits_all": False,
    }
    threads = args.n_threads or idle_cores()
    model["n_threads"] = threads
    model["n_threads_batch"] = threads
    print(f"tether model server: {threads} thread(s)", file=sys.stderr, flush=True)
    check_grammar_last(llama_cpp.Llama)
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
