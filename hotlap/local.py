"""`hotlap train`: the whole pipeline on one machine, no Docker.

Starts its own redis-server, seeds the store (a local folder by default, or S3), then runs the
trainer and N simulator workers as separate processes — the same `python -m trainer` and
`python -m simulator` services compose runs — shows live progress and ends with a summary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hotlap.progress import ProgressDisplay, format_metrics
from hotlap.redis_server import die_with_parent, redis_server
from hotlap.seed import seed_store
from shared.config import REDIS_MAXMEMORY_BYTES, ServiceConfig, redact_url
from shared.run_files import RunFiles
from shared.service import EXIT_LEASE, EXIT_NOT_SEEDED, EXIT_SERVER_ERROR
from shared.store import CHECKPOINTS_INDEX, ModelStore, StoreError, open_store
from shared.transport import RunTransport, TransportError

PROGRESS_EVERY_S = 1.0
WORKER_EXIT_GRACE_S = 30.0
STOP_AT_ONCE_GRACE_S = 5.0  # after a second Ctrl-C, before SIGKILL


@dataclass(frozen=True)
class LocalRun:
    run_id: str
    store_url: str
    s3_endpoint_url: str | None
    workers: int
    redis_url: str | None = None  # use this server instead of starting one
    redis_maxmemory: int = REDIS_MAXMEMORY_BYTES  # of the server it starts (noeviction)
    log_dir: Path | None = None
    quiet: bool = False
    overwrite: bool = False  # replace a run with different files in the store (else: refuse)
    tensorboard_dir: Path | None = None  # the trainer writes TensorBoard scalars here
    banner: str = ""  # printed once the run is known to train (not for a run that already ended)
    resume_command: str = ""  # printed in the summary of a run that stopped before its end


def _service_env(run: LocalRun, redis_url: str, worker_name: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOTLAP_RUN_ID=run.run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=run.store_url)
    if run.tensorboard_dir and not worker_name:
        env["HOTLAP_TENSORBOARD_DIR"] = str(run.tensorboard_dir)
    if run.s3_endpoint_url:
        env["HOTLAP_S3_ENDPOINT_URL"] = run.s3_endpoint_url
    if worker_name:
        env["HOTLAP_WORKER_NAME"] = worker_name
        # The stream's bound follows the Redis it runs on, with headroom (shared.config.STREAM_MAX_BYTES).
        env.setdefault("HOTLAP_STREAM_MAX_BYTES", str(run.redis_maxmemory // 2))
    if worker_name:
        # One compute thread per worker: N workers share the cores while they play. The trainer
        # keeps torch's default (all cores): under the sync schedule workers wait while it trains.
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _spawn(module: str, env: dict[str, str], log_path: Path | None) -> subprocess.Popen[bytes]:
    """Starts a service with SIGINT ignored (an ignored signal survives exec; shared.service keeps it
    so): the terminal's Ctrl-C reaches the whole process group, and only `hotlap train` acts on it,
    by sending each service one SIGTERM (two Ctrl-C: two SIGTERM, which stops them at once)."""
    # Appended: a resumed run keeps the earlier sessions' lines (and the reason it stopped).
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent)  # a killed hotlap train leaves no service behind
    finally:
        signal.signal(signal.SIGINT, previous)


def collect_rate(progress: Mapping[str, str], workers: Mapping[str, Mapping[str, str]]) -> float:
    """Env steps/s of all workers: over the last iteration's collection (its steps / collect_seconds),
    or, before the first iteration, the sum of the workers' heartbeat rates. A heartbeat rate sampled
    at an iteration's end is ~0 in sync mode (the workers wait for the new version), so it is no measure."""
    if float(progress.get("collect_seconds", 0) or 0) > 0:
        return float(progress.get("steps", 0)) / float(progress["collect_seconds"])
    return sum(float(w.get("steps_per_s", 0)) for w in workers.values())


def _iteration_metrics(transport: RunTransport, episodes_per_iteration: int) -> tuple[int, dict[str, float | str]]:
    """(iterations done, what the progress display shows) from the trainer's progress hash and
    the workers' heartbeats in Redis."""
    progress = transport.progress()
    workers = transport.live_workers()
    live: dict[str, float | str] = {"workers": str(len(workers)), "steps/s": f"{collect_rate(progress, workers):,.0f}"}
    if not progress:
        return 0, live
    evaluation: dict[str, float | str] = {}
    if "eval_version" in progress:  # worker 0's greedy evaluation of the latest evaluated version
        evaluation = {"eval": f"v{progress['eval_version']} {float(progress['eval_progress']):.1f}% "
                              f"{progress['eval_laps']}/{progress['eval_trials']} laps",
                      "best": f"v{progress['best_version']}"}
    return int(progress["iteration"]), {
        "reward": float(progress["mean_reward"]),
        "progress %": float(progress["mean_progress"]),
        "laps": f"{float(progress['laps_completed']):.0f}/{episodes_per_iteration}",
        **_kl(progress),
        **evaluation,
        **live,
    }


def _check_service_settings(run: LocalRun) -> None:
    """The settings the services will get, checked as they check them (a bad --redis-url would
    otherwise be a redis-py traceback, or a service's error after Redis and the seed started)."""
    values = {"HOTLAP_RUN_ID": run.run_id, "HOTLAP_STORE_URL": run.store_url,
              "HOTLAP_S3_ENDPOINT_URL": run.s3_endpoint_url or "", "HOTLAP_REDIS_URL": run.redis_url or ""}
    ServiceConfig.from_env(values, source="hotlap train settings (--run-id, --store, --s3-endpoint-url, --redis-url)")


def _kl(progress: dict[str, str]) -> dict[str, float | str]:
    """The last update's KL (max of its epoch means) and its epochs, `*` when it stopped early
    (hyperparameters.json hotlap_target_kl); nothing from a trainer that does not report them."""
    if "approx_kl_max" not in progress:
        return {}
    stopped = "*" if float(progress.get("stopped_early", 0)) else ""
    return {"kl max": f"{float(progress['approx_kl_max']):.3f}",
            "epochs": f"{float(progress.get('epochs', 0)):.0f}{stopped}"}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Ctrl-C, `kill`, `timeout` and a closed terminal all stop a run the same graceful way. SIGINT is
    handled even when inherited as ignored (a script's `cmd &`): `hotlap train` is the one that acts
    on it, for the services it starts."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_locally(run: LocalRun, files: RunFiles) -> int:
    """Returns 0 when the run finished and the trainer and every worker exited 0; 1 otherwise
    (a failed run too: its processes exit 0, see docs/architecture.md "Failure is visible").
    Raises SeedError when the store holds a run with other files and `run.overwrite` is off, and
    ConfigError naming every bad run id, store, endpoint or Redis URL before anything starts.
    SIGINT, SIGTERM and SIGHUP stop it gracefully (see _stop_signals_interrupt)."""
    with _stop_signals_interrupt():
        return _train_locally(run, files)


def _train_locally(run: LocalRun, files: RunFiles) -> int:
    _check_service_settings(run)
    store = ModelStore(open_store(run.store_url, run.s3_endpoint_url))
    seeded = seed_store(store, files, overwrite=run.overwrite)
    if (ended := _already_ended(run, store)) is not None:
        return ended
    if run.banner:
        print(run.banner, flush=True)
    if seeded.outcome != "new":
        print(f"{store.url}: {'same files: resuming' if seeded.outcome == 'resumed' else 'overwrote'} "
              f"run {run.run_id} (identity {seeded.nonce})", flush=True)
    log_dir = run.log_dir
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _redis(run) as redis_url:
        if not run.quiet:
            print(f"live status: hotlap status {run.run_id} --redis-url {redact_url(redis_url)}", flush=True)
        transport = RunTransport.from_url(redis_url, run.run_id, nonce=seeded.nonce)
        trainer = _spawn("trainer", _service_env(run, redis_url), log_dir / "trainer.log" if log_dir else None)
        workers = [
            _spawn("simulator", _service_env(run, redis_url, f"{socket.gethostname()}-w{i}"),
                   log_dir / f"simulator-{i}.log" if log_dir else None)
            for i in range(run.workers)
        ]
        try:
            _watch(trainer, transport, files, run.quiet)
        except KeyboardInterrupt:
            print("\ninterrupted: the trainer publishes what it has trained, then everything stops "
                  "(Ctrl-C again: stop at once)", flush=True)
            _signal_all([trainer, *workers])
        try:
            codes = _wait_all(trainer, workers)
        except KeyboardInterrupt:
            print("\ninterrupted again: stopping at once", flush=True)
            codes = _stop_at_once([trainer, *workers])
        try:
            status = transport.status()
            errors = transport.recent_errors()
        except TransportError as e:  # e.g. a wrong password: the processes' logs say the same
            status, errors = None, [str(e)]
    failure = status.reason if status and status.state == "failed" else (store.failure() or "")
    _summary(run, store, codes, failure, errors, time.monotonic() - started)
    return 0 if all(code == 0 for code in codes) and not failure and store.is_done() else 1


# What a service's exit status means (shared.service), for the summary of a run that did not end well.
EXIT_REASONS = {
    EXIT_SERVER_ERROR: "Redis or the store refused for good, or stayed away past HOTLAP_RETRY_GIVE_UP_S",
    EXIT_NOT_SEEDED: "the store holds no run to join",
    EXIT_LEASE: "another trainer holds this run's lease or took it over (one trainer per run)",
}


def _already_ended(run: LocalRun, store: ModelStore) -> int | None:
    """A finished or failed run is not trained again (the trainer would exit at once): say so and
    what to do, without starting Redis or any process. The exit status, or None to train."""
    # --overwrite deletes a run only when its files changed (seed_store): a finished run left with
    # HOTLAP_OVERWRITE=1 set must not be deleted by the next start, so starting over is a new run id.
    start_over = "a new --run-id (--overwrite replaces a run only when its files changed)"
    failure = store.failure()
    if failure is not None:
        print(f"run {run.run_id} failed earlier and is not trained again: {failure or '(no reason recorded)'}\n"
              f"  fix the cause, then start over: {start_over}", flush=True)
        return 1
    if not store.is_done():
        return None
    latest = store.latest_version()
    if latest is None:
        print(f"run {run.run_id} is marked finished (ip/done) but {store.url} holds no model version: "
              f"nothing to train or evaluate; start over: {start_over}", flush=True)
        return 1
    print(f"run {run.run_id} is already finished (ip/done; model version {latest} in {store.url}): nothing to train\n"
          f"  evaluate it:      hotlap evaluate {store.url}\n"
          f"  train on from it: a new --run-id with --pretrained {store.url}@best (clone)\n"
          f"  start over:       {start_over}", flush=True)
    return 0


@contextmanager
def _redis(run: LocalRun) -> Iterator[str]:
    if run.redis_url:
        yield run.redis_url
    else:
        with redis_server(maxmemory=run.redis_maxmemory) as url:
            yield url


def _watch(trainer: subprocess.Popen[bytes], transport: RunTransport, files: RunFiles, quiet: bool) -> None:
    """Polls Redis while the trainer runs: a live bar on a terminal, one line per iteration elsewhere."""
    if quiet:
        trainer.wait()
        return
    episodes_per_iteration = files.hyperparameters.num_episodes_between_training
    with ProgressDisplay("training", total=files.settings.max_iterations, unit="iteration") as display:
        display.status("waiting for the first iteration")
        while trainer.poll() is None:
            time.sleep(PROGRESS_EVERY_S)
            _show(display, transport, episodes_per_iteration)
        _show(display, transport, episodes_per_iteration)  # the last iteration, finished since the last poll


def _show(display: ProgressDisplay, transport: RunTransport, episodes_per_iteration: int) -> None:
    try:
        completed, metrics = _iteration_metrics(transport, episodes_per_iteration)
    except (TransportError, KeyError, ValueError):
        return
    if completed:
        display.update(completed, metrics)
    else:
        display.status("waiting for the first iteration | " + format_metrics(metrics))


def _signal_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def _stop_at_once(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """A second SIGTERM exits a service at once, but only between Python bytecodes: one stuck in a
    long native call (a loaded machine's PPO minibatch) is killed after STOP_AT_ONCE_GRACE_S."""
    _signal_all(procs)
    deadline = time.monotonic() + STOP_AT_ONCE_GRACE_S
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def _wait_all(trainer: subprocess.Popen[bytes], workers: list[subprocess.Popen[bytes]]) -> list[int]:
    codes = [trainer.wait()]
    deadline = time.monotonic() + WORKER_EXIT_GRACE_S
    for proc in workers:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.terminate()
            codes.append(proc.wait(timeout=10))
    return codes


def _best_line(store: ModelStore) -> str:
    """The evaluation's best version (model/deepracer_checkpoints.json, BEST_MODEL_METRIC), or ""."""
    from hotlap.models import resolve_version

    try:
        best = resolve_version(store, "best")
        index = json.loads(store.get_text(CHECKPOINTS_INDEX))["best_checkpoint"]
        metric = float(index.get("avg_eval_metric", index.get("avg_comp_pct")))
    except (StoreError, ValueError, TypeError, KeyError):
        return ""  # no evaluation yet (or a damaged index: `hotlap evaluate --version best` names it)
    return f"version {best} by evaluation ({metric:g}; `hotlap evaluate {store.url} --version best`)"


def _summary(run: LocalRun, store: ModelStore, codes: list[int], failure: str, errors: list[str],
             seconds: float) -> None:
    latest = store.latest_version()
    print()
    print(f"run {run.run_id}: {'finished' if store.is_done() else 'NOT finished'} in {seconds:.0f}s")
    print(f"  store:          {store.url}")
    print(f"  latest model:   version {latest}" + (f" (model/{latest}/)" if latest is not None else ""))
    if latest is not None and (best := _best_line(store)):
        print(f"  best model:     {best}")
    print(f"  exit codes:     trainer {codes[0]}, workers {codes[1:]}")
    if run.log_dir:
        print(f"  process logs:   {run.log_dir}")
    logs = ["trainer.log"] + [f"simulator-{i}.log" for i in range(len(codes) - 1)]
    for log_name, code in zip(logs, codes, strict=True):
        if code in EXIT_REASONS:
            where = f": {run.log_dir / log_name}" if run.log_dir else ""
            print(f"  exit {code}:         {log_name.removesuffix('.log')}: {EXIT_REASONS[code]} (its log says more"
                  f"{where})")
    if failure:
        print(f"  FAILED:         {failure}")
    elif not store.is_done():  # stopped: the same command, with the same files, goes on from `latest`
        print(f"  to resume:      {run.resume_command or 'the same command with --run-id ' + run.run_id}")
    for error in errors[:5]:
        if not failure or failure not in error:
            print(f"  error:          {error}")
