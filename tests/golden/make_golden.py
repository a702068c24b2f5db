"""How the golden journals under ``tests/golden/`` were made, one per journal format.

``v2.db``: a store in schema version 2 (events as lines in batch rows, journal format 2), written
by the tether of commit 1b80eff, the last to store the journal that way::

    git worktree add /tmp/tether-v2 1b80eff
    cp -r tests/golden /tmp/tether-v2/tests/
    cd /tmp/tether-v2 && PYTHONPATH=$PWD/src:$PWD python -m tests.golden.make_golden OUT.db

``v3.db``: the same runs in journal format 3 (one row per event, typed events), written by this
version: ``PYTHONPATH=$PWD/src:$PWD python -m tests.golden.make_golden tests/golden/v3.db``.

Runs (all finished, in this order): a read; an irreversible refund a human approved; a refund
the policy denied; a run that failed (its tool raised, then the model had no answer). The test in
``tests/unit/test_golden_journal.py`` opens a copy with this version of tether, which migrates it.
"""

from __future__ import annotations

import asyncio
import sys

from tests.golden.agent import agent
from tether import ScriptedModel, call
from tether.engine import Runtime
from tether.journal import Store


async def _make(path: str) -> list[str]:
    store = Store(path)
    ids: list[str] = []
    try:
        rt = Runtime(store, model=ScriptedModel([call("lookup", order_id="A"), "A is pending."]))
        ids.append((await rt.run(agent, "where is A?")).run_id)

        rt = Runtime(store, model=ScriptedModel([call("refund", order_id="A", amount=20), "done"]))
        waiting = await rt.run(agent, "refund A")
        rt.approve(store.list_approvals(run_id=waiting.run_id)[0].id, by="alice", agent=agent)
        ids.append((await rt.resume(waiting.run_id, agent)).run_id)

        script = [call("refund", order_id="B", amount=80), "I cannot refund that much."]
        rt = Runtime(store, model=ScriptedModel(script))
        ids.append((await rt.run(agent, "refund B fully")).run_id)

        # the script ends after the first call: the model's next answer fails the run
        rt = Runtime(store, model=ScriptedModel([call("lookup", order_id="broken")]))
        ids.append((await rt.run(agent, "where is broken?")).run_id)
    finally:
        store.close()
    return ids


if __name__ == "__main__":
    for run_id in asyncio.run(_make(sys.argv[1])):
        print(run_id)
