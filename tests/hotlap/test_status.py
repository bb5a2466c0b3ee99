"""`hotlap status RUN` on real runs: a trainer and a simulator worker as processes (and `hotlap train`)
against a private redis-server; every field checked against Redis itself and the run's files."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hotlap.cli import main
from shared.keys import RunKeys
from shared.transport import DROP_REASONS, RunTransport
from tests.conftest import private_redis
from tests.e2e.test_lifecycle import TIMEOUT_S, Procs
from tests.e2e.test_pipeline import ITERATIONS, METADATA, TINY_HYPERPARAMETERS

REPO = Path(__file__).resolve().parents[2]
MAXMEMORY = 256 * 1024 * 1024


@pytest.fixture(scope="module")
def bounded_redis() -> Iterator[str]:
    """A redis-server of this module's own with a maxmemory, so the memory fields have a limit to show."""
    with private_redis("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction") as (_, port):
        yield f"redis://127.0.0.1:{port}/0"


def status_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["status", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def decoded(client: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


def wait_until_training(procs: Procs, worker: str) -> None:
    """Until an iteration is trained and the worker and the trainer have beaten (the run goes on)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{procs.log(name)[-3000:]}"
        beat = procs.transport.worker_heartbeat(worker) or {}
        if (int(procs.transport.progress().get("iteration", 0)) >= 1 and int(beat.get("version", -1)) >= 1
                and procs.transport.trainer_heartbeat()):
            return
        assert time.monotonic() < deadline, "the run never got through its first iteration"
        time.sleep(0.1)


def assert_matches_redis(status: dict, client: redis.Redis, keys: RunKeys, worker: str, trainer_pid: int) -> None:
    assert status["state"] == decoded(client, keys.status)["state"] == "running"
    progress = decoded(client, keys.progress)
    assert status["iteration"] == int(progress["iteration"]) >= 1
    assert status["max_iterations"] == int(progress["max_iterations"]) == ITERATIONS
    assert status["progress"]["mean_reward"] == float(progress["mean_reward"])
    assert status["latest_version"] == int(client.get(keys.model))
    trainer = decoded(client, keys.trainer)
    assert status["trainer"]["step"] == trainer["step"]
    assert status["trainer"]["version"] == int(trainer["version"])
    assert status["trainer"]["holder"] == f"host={socket.gethostname()} pid={trainer_pid}"  # the lease, no token
    beat = decoded(client, keys.worker(worker))
    [row] = status["workers"]
    assert row["name"] == worker and row["live"] is True
    assert row["index"] == int(client.hget(keys.worker_indexes, worker)) == 0
    assert row["host"] == socket.gethostname()
    assert row["version"] == int(beat["version"]) >= 1
    assert row["steps_per_s"] == float(beat["steps_per_s"])
    assert row["episodes"] == int(beat["episodes"]) and row["steps"] == int(beat["steps"])
    assert row["last_heartbeat"] == float(beat["last_heartbeat"])
    assert status["registered_workers"] == 1
    assert status["stream"]["depth"] == client.xlen(keys.experience)
    accounting = {k: int(v) for k, v in decoded(client, keys.accounting).items()}
    episodes = status["episodes"]
    assert episodes["produced"] == accounting["produced"] > 0
    assert episodes["consumed"] == accounting.get("consumed", 0)
    assert episodes["dropped"] == {r: accounting.get(f"dropped_{r}", 0) for r in DROP_REASONS}
    assert episodes["reissued"] == accounting.get("reissued", 0)
    memory = client.info("memory")
    assert status["redis_memory"]["maxmemory"] == memory["maxmemory"] == MAXMEMORY
    assert status["redis_memory"]["maxmemory_policy"] == "noeviction"
    assert 0 < status["redis_memory"]["used_memory"] < MAXMEMORY


@pytest.mark.slow
def test_status_of_a_running_then_finished_run(tmp_path: Path, bounded_redis: str, run_id: str,
                                               capsys: pytest.CaptureFixture[str]):
    """Paused (SIGSTOP) mid-run, so Redis holds still while `hotlap status --json` and the test read it;
    then `--watch --count`, Ctrl-C on a watching process, and the run's end."""
    procs = Procs(tmp_path, run_id, bounded_redis)
    client = redis.Redis.from_url(bounded_redis)
    keys = RunKeys(run_id, json.loads((tmp_path / "store/ip/run.json").read_text())["nonce"])
    try:
        trainer = procs.start("trainer", "trainer")
        procs.start("w0", "simulator", HOTLAP_HEARTBEAT_S="0.2")
        wait_until_training(procs, "w0")

        for proc in procs.procs.values():
            proc.send_signal(signal.SIGSTOP)
        try:
            status = status_json(capsys, run_id, "--redis-url", bounded_redis)
            assert status["run"] == run_id and status["identity"] == keys.nonce  # the store's ip/run.json
            assert status["other_identities"] == [] and status["redis"] == bounded_redis
            assert_matches_redis(status, client, keys, "w0", trainer.pid)
            assert main(["status", run_id, "--redis-url", bounded_redis]) == 0
            text = capsys.readouterr().out
            assert f"run {run_id} (identity {keys.nonce})" in text and "w0" in text and "1 live" in text
        finally:
            for proc in procs.procs.values():
                proc.send_signal(signal.SIGCONT)

        # --watch --count N: N objects, one JSON line each, while the run goes on
        capsys.readouterr()
        assert main(["status", run_id, "--redis-url", bounded_redis, "--watch", "--count", "3",
                     "--interval", "0.2", "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3
        produced = [json.loads(line)["episodes"]["produced"] for line in lines]
        assert produced == sorted(produced)  # counters only grow

        # Ctrl-C ends a watch with exit 0, no traceback; also when started by a script with `&`, which
        # hands it SIGINT ignored
        watcher = subprocess.Popen([sys.executable, "-m", "hotlap", "status", run_id, "--redis-url", bounded_redis,
                                    "--watch", "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith(f"run {run_id} "), watcher.stderr.read() if watcher.stderr else ""
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
        assert watcher.returncode == 0 and "Traceback" not in err, err

        assert trainer.wait(timeout=TIMEOUT_S) == 0, procs.log("trainer")[-3000:]
        assert procs.wait("w0") == 0, procs.log("w0")[-3000:]
    finally:
        procs.kill_all()

    done = status_json(capsys, run_id, "--redis-url", bounded_redis)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "store/logs/episodes.csv").read_text())))
    assert done["state"] == "done" and done["iteration"] == ITERATIONS == done["latest_version"]
    episodes = done["episodes"]
    assert episodes["consumed"] == len(rows) and episodes["in_stream"] == 0 == done["stream"]["depth"]
    assert episodes["produced"] == episodes["consumed"] + sum(episodes["dropped"].values())


@pytest.mark.slow
def test_a_finished_run_whose_keys_expired_is_not_in_redis(tmp_path: Path, redis_url: str, run_id: str):
    """`hotlap train` to the end with a 1 s HOTLAP_FINISHED_RUN_TTL_S: once Redis forgot the run,
    `hotlap status` says so in one line naming the run and the Redis, and exits non-zero."""
    (tmp_path / "hyperparameters.json").write_text(json.dumps(TINY_HYPERPARAMETERS))
    (tmp_path / "model_metadata.json").write_text(json.dumps(METADATA))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")} | {"HOTLAP_FINISHED_RUN_TTL_S": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--run-id", run_id, "--runs-dir", str(tmp_path / "runs"),
         "--redis-url", redis_url, "--hyperparameters", str(tmp_path / "hyperparameters.json"),
         "--model-metadata", str(tmp_path / "model_metadata.json"), "--max-iterations", "1",
         "--episodes-per-iteration", "2", "--max-steps", "30", "--cars-per-worker", "2", "--min-eval-trials", "0"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"live status: hotlap status {run_id} --redis-url {redis_url}" in result.stdout
    transport = RunTransport.from_url(redis_url, run_id)
    deadline = time.monotonic() + 60
    while transport.identities():  # the keys expire one second after the run ended
        assert time.monotonic() < deadline, "the finished run's keys never expired"
        time.sleep(0.2)
    gone = subprocess.run([sys.executable, "-m", "hotlap", "status", run_id, "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert gone.returncode != 0 and gone.stdout == ""
    [line] = gone.stderr.splitlines()
    assert f"run {run_id} is not in Redis at {redis_url}" in line


def test_a_wrong_run_id_and_an_unreachable_redis_are_one_line_errors(redis_url: str,
                                                                    capsys: pytest.CaptureFixture[str]):
    assert main(["status", "no-such-run", "--redis-url", redis_url]) != 0
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("hotlap status: run no-such-run is not in Redis at " + redis_url)

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["status", "any", "--redis-url", f"redis://:secret@127.0.0.1:{port}/0"]) != 0
    [line] = capsys.readouterr().err.splitlines()
    assert f"127.0.0.1:{port}" in line and "unreachable" in line and "secret" not in line

    assert main(["status", "any", "--redis-url", "http://127.0.0.1:6379"]) != 0
    [line] = capsys.readouterr().err.splitlines()
    assert "--redis-url http://127.0.0.1:6379" in line


def test_status_finds_the_newest_identity_of_a_run_id(redis_url: str, run_id: str,
                                                     capsys: pytest.CaptureFixture[str]):
    """A run id used twice on one Redis (a new prefix, or --overwrite): the run whose status changed
    last is shown, the other named; keys of other run ids and a worker named `status` are not identities."""
    older, newer = RunTransport.from_url(redis_url, run_id, nonce="aaa111"), RunTransport.from_url(
        redis_url, run_id, nonce="bbb222")
    older.set_status("done")
    time.sleep(0.01)  # the newer status is set later (updated_at orders them)
    newer.set_status("running")
    RunTransport.from_url(redis_url, f"{run_id}x", nonce="ccc333").set_status("running")
    newer.heartbeat("status", {"index": 0})  # hotlap:{run}:{nonce}:workers:status
    assert list(RunTransport.from_url(redis_url, run_id).identities()) == ["bbb222", "aaa111"]
    status = status_json(capsys, run_id, "--redis-url", redis_url)
    assert status["identity"] == "bbb222" and status["other_identities"] == ["aaa111"]
    assert status["state"] == "running" and [w["name"] for w in status["workers"]] == ["status"]


def test_run_id_with_glob_characters_is_matched_literally(redis_url: str, run_id: str):
    RunTransport.from_url(redis_url, f"{run_id}-a", nonce="abc123").set_status("running")
    assert RunKeys.every_identity_status(f"{run_id}-?") == f"hotlap:{run_id}-\\?:*:status"
    assert list(RunTransport.from_url(redis_url, f"{run_id}-?").identities()) == []
    assert list(RunTransport.from_url(redis_url, f"{run_id}-a").identities()) == ["abc123"]



def test_watch_on_a_terminal_redraws_in_place(redis_url: str, run_id: str):
    """On a terminal --watch is a rich Live display: the status drawn, redrawn --count times, exit 0."""
    RunTransport.from_url(redis_url, run_id, nonce="ddd444").set_status("running")
    leader, follower = pty.openpty()
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        proc = subprocess.Popen([sys.executable, "-m", "hotlap", "status", run_id, "--redis-url", redis_url,
                                 "--count", "2", "--interval", "0.1"], stdout=follower, stderr=follower, cwd=REPO,
                                env=dict(os.environ, COLUMNS="120", TERM="xterm"))
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = terminal.read(4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert text.count(f"run {run_id} (identity ddd444)") >= 2  # drawn, then redrawn
    assert "\x1b[2K" in text and "Ctrl-C to stop" in text  # lines erased: redrawn in place, not scrolled


def test_values_json_cannot_hold_are_null(redis_url: str, run_id: str, capsys: pytest.CaptureFixture[str]):
    """A non-finite statistic in the progress hash (e.g. explained variance of a constant return) is
    null in --json, which stays strict JSON."""
    transport = RunTransport.from_url(redis_url, run_id, nonce="eee555")
    transport.set_status("running")
    transport.set_progress({"iteration": 2, "explained_variance": float("nan"), "mean_reward": 1.5})
    capsys.readouterr()
    assert main(["status", run_id, "--redis-url", redis_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert status["progress"] == {"iteration": 2, "explained_variance": None, "mean_reward": 1.5}
