"""FallbackModel: try models in order until one answers.

Each model is tried in turn; a :class:`~tether.errors.ModelError` for which ``on(err)`` is true
moves on to the next model, one for which it is false is raised at once, and any other exception
propagates untouched. The answer carries:

* ``meta["fallback_from"]``: names of the models that failed before it, in order (empty when the
  primary answered);
* ``meta["fallback_errors"]``: their error messages, in the same order;
* ``model``: the model that answered (the inner model's own ``model`` when it set one).

When every model fails, the last error is raised with a note listing every failure. The earlier
errors are also chained through ``__cause__`` (each error's cause is the one before), except where
an error already has a cause of its own (a provider's underlying HTTP error), which is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from tether.errors import ModelError
from tether.messages import ModelRequest, ModelResponse
from tether.models.base import Model


def _always(err: ModelError) -> bool:
    return True


class FallbackModel:
    """Wraps a primary model and fallbacks; the first that answers wins."""

    def __init__(
        self,
        primary: Model,
        *fallbacks: Model,
        on: Callable[[ModelError], bool] = _always,
    ) -> None:
        self.models: tuple[Model, ...] = (primary, *fallbacks)
        self.on = on

    @property
    def name(self) -> str:
        return "fallback:" + ",".join(m.name for m in self.models)

    async def request(self, request: ModelRequest) -> ModelResponse:
        failed: list[tuple[Model, ModelError]] = []
        for model in self.models:
            try:
                response = await model.request(request)
            except ModelError as err:
                if not self.on(err):
                    raise
                previous = failed[-1][1] if failed else None
                if previous is not None and previous is not err and err.__cause__ is None:
                    err.__cause__ = previous
                failed.append((model, err))
                continue
            if not response.model:
                response.model = model.name
            response.meta["fallback_from"] = [m.name for m, _ in failed]
            if failed:
                response.meta["fallback_errors"] = [str(e) for _, e in failed]
            return response
        last = failed[-1][1]
        last.add_note("all models failed: " + "; ".join(f"{m.name}: {e}" for m, e in failed))
        raise last
