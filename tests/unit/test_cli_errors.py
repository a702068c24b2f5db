"""What the CLI does when it is interrupted or its inputs and store are broken: one clear line,
never a traceback, and nothing half-done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL, ROOT, fresh_pg_url, tether
from tether.journal.store import Store

SLOW = "tests.integration.hostile_agent:slow_agent"
BROKEN = "tests.integration.hostile_agent:broken_agent"
DEEP = "tests.integration.hostile_agent:deep_agent"
FLAKY = "tests.integration.hostile_agent:flaky_agent"
QUICK = "examples.quickstart.agent:agent"


def one_clear_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


def slow_env(tmp_path: Path) -> dict[str, str]:
    return {
        "HOSTILE_STARTED": str(tmp_path / "started"),
        "HOSTILE_RELEASE": str(tmp_path / "release"),
        "HOSTILE_NOTE": str(tmp_path / "note"),
    }


def spawn(db: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The real CLI in a child process, left running."""
    return subprocess.Popen(
        [sys.executable, "-m", "tether.cli.app", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "TETHER_DB": db,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "COLUMNS": "200",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never reached the step"
        time.sleep(0.05)


def only_run(db: str) -> dict[str, object]:
    store = Store(db)
    try:
        [record] = store.list_runs()
        return record.to_dict()
    finally:
        store.close()


# -- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "resume"])
def test_ctrl_c_names_the_run_and_how_to_continue_it(
    store_url: str, tmp_path: Path, command: str
) -> None:
    env = slow_env(tmp_path)
    started = Path(env["HOSTILE_STARTED"])
    proc = spawn(store_url, env, "run", SLOW, "--input", "go")
    if command == "resume":  # interrupt a run, then interrupt its resume the same way
        wait_for(started, proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        started.unlink()
        run_id = str(only_run(store_url)["id"])
        proc = spawn(store_url, env, "resume", run_id, "--agent", SLOW)
    wait_for(started, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    run = only_run(store_url)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert f"interrupted: run {run['id']} is running" in stderr
    assert f"continue it with `tether resume {run['id']}`" in stderr
    # the run continues where it stopped
    Path(env["HOSTILE_RELEASE"]).write_text("go")
    resumed = tether(store_url, "resume", str(run["id"]), "--agent", SLOW, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    assert Path(env["HOSTILE_NOTE"]).read_text() == "after the wait"


# -- a broken store or input ----------------------------------------------------------------------


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("these are my notes, not a database\n" * 200)
    one_clear_line(tether(bad, "runs"), "cannot open store", "file is not a database")
    assert bad.read_text().startswith("these are my notes")


def test_a_truncated_or_damaged_database(tmp_path: Path) -> None:
    db = tmp_path / "good.db"
    out = tether(db, "run", QUICK, "--input", "Refund order #1001 please", "--json")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    whole = db.read_bytes()
    assert len(whole) > 40_000
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(whole[:20_000])
    one_clear_line(tether(truncated, "runs"), "malformed")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(whole[:12_288] + b"\xff" * 8192 + whole[20_480:])
    for args in (["runs"], ["show", run_id], ["approvals"]):
        one_clear_line(tether(damaged, *args), "malformed")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:secret@127.0.0.1:notaport/test",
        "postgresql://[::1/test",
        "postgresql://postgres@127.0.0.1:1/test",  # nothing listens there
    ],
)
def test_a_malformed_or_unreachable_postgresql_url(tmp_path: Path, url: str) -> None:
    out = tether(url, "runs")
    one_clear_line(out, "cannot open store")
    assert "secret" not in out.stderr


def test_json_nested_too_deeply(tmp_path: Path) -> None:
    db = tmp_path / "deep.db"
    deep = "[" * 5000 + "]" * 5000
    one_clear_line(tether(db, "run", QUICK, "--input", deep), "nested too deeply")
    out = tether(db, "run", QUICK, "--input", "Refund order #1001 please", "--json")
    approval_id = json.loads(out.stdout)["waiting_for"]["approval_id"]
    edit = '{"a":' * 5000 + "1" + "}" * 5000
    one_clear_line(tether(db, "approve", approval_id, "--edit", edit), "--edit must be")
    pending = json.loads(tether(db, "approvals", "--json").stdout)
    assert [a["id"] for a in pending] == [approval_id]


def test_model_arguments_nested_too_deeply_go_back_to_the_model(tmp_path: Path) -> None:
    out = tether(tmp_path / "deep.db", "run", DEEP, "--input", "find ana", "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"
    shown = tether(tmp_path / "deep.db", "show", json.loads(out.stdout)["run_id"]).stdout
    assert "arguments are nested too deeply" in shown


def test_an_agent_whose_setup_fails_leaves_the_approval_pending(store_url: str) -> None:
    out = tether(store_url, "run", QUICK, "--input", "Refund order #1001 please", "--json")
    approval_id = json.loads(out.stdout)["waiting_for"]["approval_id"]
    for command in (["approve", approval_id], ["reject", approval_id, "--reason", "no"]):
        failed = tether(store_url, *command, "--agent", BROKEN)
        one_clear_line(failed, "failed to set up", "the order service is unreachable")
    # the same agent as the run's recorded (and allowed) one
    store = Store(store_url)
    store.update_run(json.loads(out.stdout)["run_id"], agent_ref=BROKEN)
    store.close()
    failed = tether(store_url, "approve", approval_id, env={"TETHER_AGENTS": BROKEN})
    one_clear_line(failed, "failed to set up", "the order service is unreachable")
    pending = json.loads(tether(store_url, "approvals", "--json").stdout)
    assert [a["status"] for a in pending] == ["pending"]  # no decision without a resume
    started = tether(store_url, "run", BROKEN, "--input", "x")
    one_clear_line(started, "failed to set up")


def test_an_agent_failing_after_the_decision_leaves_it_whole(store_url: str) -> None:
    out = tether(store_url, "run", FLAKY, "--input", "refund #1", "--json")
    result = json.loads(out.stdout)
    approval_id, run_id = result["waiting_for"]["approval_id"], result["run_id"]
    down = tether(
        store_url, "approve", approval_id, "--agent", FLAKY, env={"HOSTILE_DEPS_DOWN": "1"}
    )
    one_clear_line(
        down, "the decision is recorded", "ConnectionError: the order service is down",
        f"`tether resume {run_id}` continues it",
    )  # fmt: skip
    decided = json.loads(tether(store_url, "approvals", "--status", "all", "--json").stdout)
    assert [a["status"] for a in decided] == ["approved"]
    resumed = tether(store_url, "resume", run_id, "--agent", FLAKY, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["output"] == "refunded"


# -- a PostgreSQL connection killed while reading the kill switch --------------------------------


def test_a_connection_killed_while_reading_the_kill_switch(pg_url: str, tmp_path: Path) -> None:
    name = f"tether-kill-{uuid.uuid4().hex[:8]}"
    url = f"{fresh_pg_url(pg_url)}&application_name={name}"
    Store(url).close()  # the tables exist before the lock below
    env = slow_env(tmp_path)
    proc = spawn(url, env, "run", SLOW, "--input", "go")
    wait_for(Path(env["HOSTILE_STARTED"]), proc)
    schema = url.split("search_path%3D", 1)[1].split("&", 1)[0]
    locker = sa.create_engine(PG_URL)
    killer = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with locker.connect() as lock:
            # hold the switch's table so the child's read of it waits, then cut that connection
            lock.execute(sa.text(f"LOCK TABLE {schema}.controls IN ACCESS EXCLUSIVE MODE"))
            Path(env["HOSTILE_RELEASE"]).write_text("go")
            deadline = time.monotonic() + 60
            killed = 0
            with killer.connect() as conn:
                while not killed:
                    assert time.monotonic() < deadline, "the child never read the kill switch"
                    assert proc.poll() is None, proc.communicate()
                    killed = len(
                        conn.execute(
                            sa.text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :name AND wait_event_type = 'Lock' "
                                "AND query LIKE '%FROM controls%'"
                            ),
                            {"name": name},
                        ).all()
                    )
                    time.sleep(0.02)
            lock.rollback()
        _, stderr = proc.communicate(timeout=60)
    finally:
        locker.dispose()
        killer.dispose()
    # the read is retried on a fresh connection: no traceback, and the run goes on to its end
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    store = Store(url)
    try:
        (run,) = store.list_runs()
        types = [e.type for e in store.events(run.id)]
    finally:
        store.close()
    assert run.status == "succeeded"
    assert types.count("tool_started") == 1  # the write was decided once and ran once
    assert Path(env["HOSTILE_NOTE"]).read_text() == "after the wait"
