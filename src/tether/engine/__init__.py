"""The engine: the step loop, run state, resume and human decisions."""

from tether.engine.result import RunResult
from tether.engine.runtime import Runtime, load_agent, rebuild_state
from tether.engine.state import RunState, RunStatus

__all__ = ["RunResult", "RunState", "RunStatus", "Runtime", "load_agent", "rebuild_state"]
