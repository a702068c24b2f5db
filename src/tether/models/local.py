"""The small local model, out of process: a supervised llama.cpp server on loopback.

``local`` runs SmolLM2-135M-Instruct (or any GGUF chat model) in a server process that tether
starts, watches and restarts (:class:`LocalServer`), and reaches it through the OpenAI-compatible
path (the openai SDK and :func:`~tether.models.openai_compat.map_sdk_error`). A native crash, a
hang or an out-of-memory kill in llama.cpp ends the server, never the process holding the runs:
the request in flight fails with a retryable :class:`~tether.errors.ModelError` (journaled with
the run), the next request starts a fresh server, and retry and fallback behave as with a remote
provider.

Processes on one machine share one server per model and settings: its pid and port are kept in a
state file under :func:`model_home`, read and written under a file lock. A server exits after
``idle_timeout`` seconds without requests.

Every turn is generated under the grammar of :mod:`tether.models.local_prompt`, sent with the
request (the server's ``grammar`` field), so tool calls are always well-formed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tether.errors import ModelError, ModelTimeout
from tether.messages import ModelRequest, ModelResponse
from tether.models.local_prompt import (
    DEFAULT_MAX_TOKENS,
    ReplyMode,
    answer,
    build_completion,
    default_model_path,
    json_grammar,
)

HOME_ENV = "TETHER_MODEL_DIR"
# Sized to the prompts of the support-desk agent (about 2,500 tokens) with room for the answer.
DEFAULT_N_CTX = 4096
DEFAULT_IDLE_TIMEOUT = 600.0
OMP_SPINCOUNT = "2000"
"""Rounds a waiting llama.cpp thread spins before it sleeps (GOMP_SPINCOUNT; see _start)."""

DEFAULT_REQUANTIZE = "q4_0"
"""The weight type the packaged model is served in: llama.cpp has repacked matrix kernels for
Q4_0 on x86 (AVX2) and ARM, none for the Q4_1 it ships in (see ``local_server.requantized``)."""

# Extra sampling fields llama.cpp's server reads from the request body.
_BODY_PARAMS = ("top_k", "min_p", "repeat_penalty")


def model_home() -> Path:
    """Where servers' state files, locks and logs live: ``$TETHER_MODEL_DIR``, else a per-user dir.

    The per-user directory is ``$XDG_RUNTIME_DIR/tether-models`` when that is set, else
    ``<tmp>/tether-models-<uid>``; it is created private (0700).
    """
    override = os.environ.get(HOME_ENV)
    if override:
        home = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        home = Path(os.environ["XDG_RUNTIME_DIR"]) / "tether-models"
    else:
        home = Path(tempfile.gettempdir()) / f"tether-models-{os.getuid()}"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What a server is started with; servers are shared between callers with equal settings."""

    model_path: Path
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    seed: int = 0
    verbose: bool = False  # llama.cpp's own log, in the server's log file
    requantize: str | None = None  # serve a copy with its weights in this type (e.g. "q4_0")

    def key(self) -> str:
        """A short name for these settings (and the Python running the server)."""
        text = json.dumps(
            [
                str(self.model_path.resolve()),
                self.n_ctx,
                self.n_threads,
                self.seed,
                self.verbose,
                self.requantize,
                sys.executable,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ServerState:
    """A running server, as recorded in its state file."""

    pid: int
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


class LocalServer:
    """Starts, finds, health-checks, restarts and stops the model server of one set of settings.

    :meth:`ensure` returns the base URL of a healthy server, starting one when none runs (or the
    recorded one is dead or hung). Safe to call from several threads and processes at once.
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        home: Path | None = None,
        start_timeout: float = 180.0,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.home = home if home is not None else model_home()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.idle_timeout = idle_timeout
        key = settings.key()
        self.state_path = self.home / f"server-{key}.json"
        self.lock_path = self.home / f"server-{key}.lock"
        self.log_path = self.home / f"server-{key}.log"
        self._known: ServerState | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self.starts = 0  # servers started by this object (a restart counts)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> ServerState | None:
        try:
            data = json.loads(self.state_path.read_text())
            return ServerState(pid=int(data["pid"]), port=int(data["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _alive(self, state: ServerState) -> bool:
        if self._child is not None and self._child.pid == state.pid:
            return self._child.poll() is None  # reaps our own child when it died
        return _pid_alive(state.pid)

    @staticmethod
    def _healthy(state: ServerState, timeout: float = 5.0) -> bool:
        try:
            reply = httpx.get(f"{state.base_url}/models", timeout=timeout)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    @property
    def state(self) -> ServerState | None:
        """The server recorded for these settings (running or not)."""
        return self._read_state()

    def ensure(self) -> str:
        """The base URL of a running server, started (or restarted) when needed."""
        known = self._known
        if known is not None and self._alive(known):
            return known.base_url
        with self._locked():
            state = self._read_state()
            if state is not None and self._alive(state) and self._healthy(state):
                self._known = state
                return state.base_url
            if state is not None:
                self._kill(state)
            self._known = self._start()
            return self._known.base_url

    def suspect(self) -> None:
        """Forget the server after a failed request: the next :meth:`ensure` checks its health."""
        self._known = None

    def _start(self) -> ServerState:
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "tether.models.local_server",
            "--model",
            str(self.settings.model_path),
            "--port",
            str(port),
            "--n-ctx",
            str(self.settings.n_ctx),
            "--seed",
            str(self.settings.seed),
            "--idle-timeout",
            str(self.idle_timeout),
        ]
        if self.settings.n_threads:
            command += ["--n-threads", str(self.settings.n_threads)]
        if self.settings.verbose:
            command.append("--verbose")
        if self.settings.requantize:
            command += ["--requantize", self.settings.requantize, "--cache-dir", str(self.home)]
        # llama.cpp's OpenMP threads wait for each other after every operation of every token.
        # By default they spin for ~300,000 rounds first: on a busy machine that burns the CPU
        # the model needs (a demo ticket took 5x longer). Sleeping at once (a passive policy)
        # costs a wake-up per operation instead: two threads then decoded at 45 ms a token
        # where one took 20. A short spin, then sleep, gives two threads 12.6 ms a token.
        env = {**os.environ}
        if "OMP_WAIT_POLICY" not in env:
            env.setdefault("GOMP_SPINCOUNT", OMP_SPINCOUNT)
        with open(self.log_path, "ab") as log:
            child = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the caller leaves a shared server be
            )
        self._child = child
        state = ServerState(pid=child.pid, port=port)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise ModelError(
                    f"local model server exited with code {child.returncode} while starting "
                    f"(log: {self.log_path})",
                    retryable=True,
                    provider="local",
                )
            if self._healthy(state, timeout=1.0):
                self.state_path.write_text(json.dumps(dataclasses.asdict(state)))
                self.starts += 1
                return state
            time.sleep(0.1)
        self._kill(state)
        raise ModelError(
            f"local model server not ready in {self.start_timeout:.0f}s (log: {self.log_path})",
            retryable=True,
            provider="local",
        )

    def _kill(self, state: ServerState) -> None:
        if self._alive(state) and self._is_server(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
            if self._child is not None and self._child.pid == state.pid:
                self._child.wait()
        self.state_path.unlink(missing_ok=True)
        if self._known == state:
            self._known = None

    @staticmethod
    def _is_server(pid: int) -> bool:
        """Whether ``pid`` is a tether model server (a recorded pid may have been reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc: trust the state file
        return b"tether.models.local_server" in cmdline

    def stop(self) -> None:
        """Stop the server of these settings, if one runs."""
        with self._locked():
            state = self._read_state()
            if state is not None:
                self._kill(state)
        self._known = None


def stop_all(home: Path | None = None) -> int:
    """Stop every server recorded under ``home`` (default :func:`model_home`); returns how many."""
    home = home if home is not None else model_home()
    stopped = 0
    for path in sorted(home.glob("server-*.json")):
        try:
            data = json.loads(path.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _pid_alive(pid) and LocalServer._is_server(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            stopped += 1
        path.unlink(missing_ok=True)
    return stopped


class LocalModel:
    """SmolLM2-135M-Instruct (or another GGUF chat model) behind a supervised local server.

    Request ``params`` are those of :func:`tether.models.local_prompt.build_completion`;
    ``max_tokens`` is the answer length when a request does not say (the grammar keeps a JSON
    answer within it). ``requantize``: serve a copy of the weights in this type (``"q4_0"``,
    ``"q8_0"``) or as they are (``None``); ``"auto"`` serves the packaged model as Q4_0 and a
    file you name as it is. A server crash or hang during a request raises a retryable
    :class:`ModelError`; wrap the model in :class:`~tether.models.retry.RetryModel` (the
    ``local`` spec does) to carry on with a new server.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        seed: int = 0,
        timeout: float = 300.0,
        name: str | None = None,
        home: Path | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        verbose: bool = False,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        requantize: str | None = "auto",
    ) -> None:
        self._sdk = _import_openai()
        self.max_tokens = max_tokens
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model_path = path
        self.seed = seed
        self.timeout = timeout
        if requantize == "auto":  # the packaged Q4_1 model is served as Q4_0 (see local_server)
            requantize = DEFAULT_REQUANTIZE if model_path is None else None
        settings = ServerSettings(
            path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            seed=seed,
            verbose=verbose,
            requantize=requantize,
        )
        self.server = LocalServer(
            settings,
            home=home,
            idle_timeout=idle_timeout,
        )
        self._name = name or (
            "local:smollm2-135m-instruct" if model_path is None else f"local:{path.stem}"
        )
        self._grammars: dict[str, str] = {}

    @property
    def name(self) -> str:
        return self._name

    def _grammar(self, schema: dict[str, Any]) -> str:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = json_grammar(schema)
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def body(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments for :func:`build_completion` output.

        The response schema travels as a GBNF ``grammar`` (stricter on strings than the server's
        own conversion, see :func:`~tether.models.local_prompt.json_grammar`).
        """
        body: dict[str, Any] = {"model": self.model_path.stem}
        extra: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key == "response_format":
                extra["grammar"] = self._grammar(value["schema"])
            elif key in _BODY_PARAMS:
                extra[key] = value
            else:
                body[key] = value
        if extra:
            body["extra_body"] = extra
        return body

    async def _complete(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        base_url = await asyncio.to_thread(self.server.ensure)
        # a client per call: an HTTP client belongs to one event loop, and callers may use many
        # (asyncio.run per run); on loopback a new connection costs next to nothing
        client = self._sdk.AsyncOpenAI(
            base_url=base_url, api_key="none", timeout=self.timeout, max_retries=0
        )
        try:
            completion = await client.chat.completions.create(**self.body(kwargs))
        except self._sdk.OpenAIError as exc:
            error = map_error(exc, self._sdk, self._name)
            if error.retryable:
                self.server.suspect()
            raise error from exc
        finally:
            await client.close()
        result: dict[str, Any] = completion.model_dump()
        return result

    def _build(
        self, request: ModelRequest, shrink: float = 1.0
    ) -> tuple[dict[str, Any], ReplyMode]:
        return build_completion(
            request, seed=self.seed, name=self._name, shrink=shrink, max_tokens=self.max_tokens
        )

    async def request(self, request: ModelRequest) -> ModelResponse:
        return await answer(request, self._build, self._complete, self._name)

    def __repr__(self) -> str:
        return f"LocalModel({str(self.model_path)!r})"


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise ImportError(
            "the local model talks to its server with the openai package: "
            "pip install 'tether[local]'"
        ) from exc
    return openai


def map_error(exc: BaseException, sdk: Any, provider: str) -> ModelError:
    """:func:`~tether.models.openai_compat.map_sdk_error`, naming a lost server for what it is."""
    from tether.models.openai_compat import map_sdk_error

    error = map_sdk_error(exc, sdk, provider)
    if isinstance(exc, sdk.APIConnectionError) and not isinstance(error, ModelTimeout):
        return ModelError(
            f"{provider}: the local model server stopped answering (it is restarted on the next "
            f"request): {exc}",
            retryable=True,
            provider=provider,
        )
    return error
