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
import hashlib
import math
import os
import sys
import threading
import time
from pathlib import Path
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
    parser.add_argument(
        "--requantize",
        choices=sorted(REQUANTIZE),
        default=None,
        help="serve a copy of the model with its weights in this type (made once, cached)",
    )
    parser.add_argument("--cache-dir", default=None, help="where requantized copies are kept")
    return parser


REQUANTIZE = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
"""Weight types a model may be served in, by name (llama.cpp's file types)."""


def requantized(source: Path, kind: str, cache: Path) -> Path:
    """A copy of the GGUF ``source`` with its weights in ``kind``, made once and kept in
    ``cache`` (named by the source's path, size and modification time, so a changed source is
    converted again).

    Why: llama.cpp's CPU backend repacks Q4_0 weights into interleaved blocks with matrix
    kernels for AVX2 and ARM, and has none for Q4_1, the type the packaged SmolLM2 ships in. On
    the 2-core AVX2 machine the support-desk demo is measured on, the Q4_0 copy evaluates a
    prompt about 1.7x and generates about 1.4x as fast (bench/RESULTS.md). The copy is
    quantized from the Q4_1 weights, so it is a slightly different model: its answers differ in
    places, not in kind.
    """
    import llama_cpp

    stat = source.stat()
    tag = hashlib.sha256(
        f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}".encode()
    ).hexdigest()[:12]
    target = cache / f"{source.stem}.{tag}.{kind}.gguf"
    if target.is_file():
        return target
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, REQUANTIZE[kind])
    params.allow_requantize = True
    params.nthread = _cores()
    code = llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"could not convert {source} to {kind} (llama.cpp returned {code})")
    os.replace(partial, target)  # whole or not at all, whoever converts at the same time
    return target


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


def idle_cores(busy: float | None = None) -> int:
    """The cores not busy with other work when the server starts, at least 1.

    llama.cpp's threads wait for each other after every operation of every token: a thread that
    shares its core with another process stalls the rest, and on a busy machine one thread gets
    more done than two (a step of the support-desk agent took a third longer with two).
    ``busy``: the cores in use (default: :func:`busy_cores`).
    """
    cores = _cores()
    if busy is None:
        busy = busy_cores()
    return max(1, min(cores, cores - int(busy + 0.5)))


def busy_cores(window: float = 0.3) -> float:
    """How many of this process's cores other work keeps busy now: measured from
    ``/proc/stat`` over ``window`` seconds, else the one-minute load average.

    The load average is a mean over the last minute: right after a heavy job (``make setup``
    compiling llama.cpp just before ``make demo``) it still says the machine is busy when it is
    idle, and the server would start with one thread where two are free.
    """
    cpus = _cpu_ids()
    first = _cpu_times(cpus)
    if first is not None:
        time.sleep(window)
        second = _cpu_times(cpus)
        if second is not None:
            total = second[0] - first[0]
            idle = second[1] - first[1]
            if total > 0:
                return max(0.0, (total - idle) / total * len(cpus))
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _cores() -> int:
    return len(_cpu_ids())


def _cpu_ids() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """(all jiffies, idle and iowait jiffies) summed over ``cpus``, or None without /proc."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = idle = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        fields = [int(f) for f in rest.split()]
        total += sum(fields[:8])  # user nice system idle iowait irq softirq steal
        idle += fields[3] + fields[4]
    return (total, idle) if total else None


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

    model_path = Path(args.model)
    if args.requantize:
        cache = Path(args.cache_dir) if args.cache_dir else model_path.parent
        model_path = requantized(model_path, args.requantize, cache)
        print(f"tether model server: weights {model_path.name}", file=sys.stderr, flush=True)
    model: dict[str, Any] = {
        "model": str(model_path),
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
