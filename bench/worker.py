"""One simulator worker against its own inference bound, for K cars per worker (issue 8 item 7).

    .venv/bin/python bench/worker.py                      # K = 1 2 4 8 16, ~2 min on 2 cores
    .venv/bin/python bench/worker.py --cars 4 --seconds 2 --rounds 3

For each K, in one process and interleaved round by round (a shared machine's load drifts; the
claims are ratios of numbers measured side by side):

(a) **worker**: the worker's own step path, a real `SimulatorWorker` set up against a private
    redis-server and a local store seeded as `hotlap train` seeds it (default files: the camera,
    the shallow network, the centre-line reward function, `reinvent_base`), acting with version 0
    under the `async` schedule: `_claim_episodes`, `_step_cars` (act(), the env step with the reward
    functions, the simtrace rows and their log lines), `_ship_finished_episodes` (the bootstrap value
    and the experience message, encoded as for Redis but not sent: the transport has its own
    benchmarks) and `_heartbeat_if_due`;
(b) **act()**: the policy's `act()` alone at batch K on observations the worker saw, the inference
    bound of (a); as the worker calls it (`torch.no_grad`) and under `torch.inference_mode`, with
    each `--threads` setting;
(c) **simulator**: the env alone (`VectorRacingEnv.step` with the same reward functions, actions
    from the action space at random), as in bench/sim.py.

Rates are car-steps per CPU second (`time.process_time`) with torch and BLAS at one thread, what a
worker gets from one dedicated core; `--threads` above 1 is timed by wall clock (more threads use
more CPU seconds, so CPU time would hide whether they help). The ratio (a)/(b) is the share of the
inference bound that the worker reaches: 1.0 would mean the worker does nothing but inference.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, mean, print_table, write_result  # noqa: E402
from hotlap.redis_server import redis_server  # noqa: E402
from hotlap.seed import UserFiles, prepare_run_files, seed_store  # noqa: E402
from shared.config import RunSettings, WorkerConfig  # noqa: E402
from shared.experience import Experience  # noqa: E402
from shared.logs import SIMTRACE_LOGGER, record_formatter  # noqa: E402
from shared.store import ModelStore, open_store  # noqa: E402
from shared.transport import RunTransport  # noqa: E402
from simulator.worker import SimulatorWorker  # noqa: E402

RUN_ID = "bench-worker"


def timed(step: Callable[[], int], seconds: float, wall: bool = False) -> float:
    """Car-steps per CPU second (per wall second with `wall`) of calling `step` (which returns the
    car-steps it did) for about `seconds` of wall time, after one untimed warm-up call."""
    step()
    clock = time.perf_counter if wall else time.process_time
    deadline = time.perf_counter() + seconds
    started, done = clock(), 0
    while time.perf_counter() < deadline:
        done += step()
    return done / max(clock() - started, 1e-9)


class Bench:
    """One worker with K cars, and the three things timed against each other."""

    def __init__(self, cars: int, redis_url: str, store: ModelStore, log_path: Path):
        config = WorkerConfig.model_validate({
            "HOTLAP_RUN_ID": RUN_ID, "HOTLAP_REDIS_URL": redis_url, "HOTLAP_STORE_URL": store.url,
            "HOTLAP_WORKER_NAME": f"bench-{cars}", "HOTLAP_CARS_PER_WORKER": cars})
        self.worker = SimulatorWorker(config, RunTransport.from_url(redis_url, RUN_ID), store)
        self.worker._push = self._encode  # type: ignore[method-assign]  # as for Redis, not sent
        self.worker._setup()
        self.worker.policy_version = 0  # version 0's weights are the policy's initial ones
        self.cars = cars
        self.sample_obs: list[dict[str, np.ndarray]] = []
        self.rng = np.random.default_rng(0)
        self.log_path = log_path

    @staticmethod
    def _encode(exp: Experience) -> None:
        exp.encode()

    def worker_step(self) -> int:
        w = self.worker
        w._claim_episodes()
        before = w.steps_played
        if len(self.sample_obs) < 64:
            self.sample_obs.append(w.obs)
        w._ship_finished_episodes(w._step_cars())
        w._heartbeat_if_due()
        return w.steps_played - before

    def act_step(self, mode: Callable[[], Any]) -> Callable[[], int]:
        policy, samples = self.worker.policy, self.sample_obs
        index = [0]

        def step() -> int:
            obs = samples[index[0] % len(samples)]
            index[0] += 1
            with mode():
                policy.act(obs)
            return self.cars
        return step

    def sim_step(self) -> int:
        env, table = self.worker.env, self.worker.policy._action_table
        pick = table[self.rng.integers(len(table), size=self.cars)]
        result = env.step(pick[:, 0].copy(), pick[:, 1].copy())
        done = np.flatnonzero(result.done)
        if done.size:
            env.reset(car_ids=done)
        return self.cars


@contextlib.contextmanager
def simtrace_to(path: Path) -> Iterator[None]:
    """The simtrace log lines go to a file, as a worker's stdout does under `hotlap train`."""
    handler = logging.FileHandler(path)
    handler.setFormatter(record_formatter("text", "simulator bench"))
    logger = logging.getLogger(SIMTRACE_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def measure(args: argparse.Namespace, redis_url: str, root: Path) -> list[dict[str, Any]]:
    store = ModelStore(open_store(f"file://{root / 'store'}"))
    settings = RunSettings.model_validate({"WORLD_NAME": args.track, "SCHEDULE": "async",
                                           "MIN_EVAL_TRIALS": 0})
    seed_store(store, prepare_run_files(UserFiles(), settings))
    benches = {k: Bench(k, redis_url, store, root / f"worker-{k}.log") for k in args.cars}
    samples: dict[int, dict[str, list[float]]] = {k: {} for k in args.cars}

    def add(k: int, key: str, value: float) -> None:
        samples[k].setdefault(key, []).append(value)

    for _ in range(args.rounds):
        for k, b in benches.items():
            torch.set_num_threads(1)
            add(k, "worker", timed(b.worker_step, args.seconds))
            add(k, "act_no_grad", timed(b.act_step(torch.no_grad), args.seconds))
            add(k, "act_inference_mode", timed(b.act_step(torch.inference_mode), args.seconds))
            add(k, "sim", timed(b.sim_step, args.seconds))
            for threads in args.threads:
                torch.set_num_threads(threads)
                add(k, f"act_wall_threads_{threads}", timed(b.act_step(torch.no_grad), args.seconds, wall=True))
            torch.set_num_threads(1)
    rows = []
    for k in args.cars:
        s = {key: mean(values) for key, values in samples[k].items()}
        ratios = [w / a for w, a in zip(samples[k]["worker"], samples[k]["act_no_grad"], strict=True)]
        rows.append({
            "cars": k, "worker_steps_per_cpu_s": s["worker"], "act_steps_per_cpu_s": s["act_no_grad"],
            "act_inference_mode_steps_per_cpu_s": s["act_inference_mode"], "sim_steps_per_cpu_s": s["sim"],
            "worker_over_act": mean(ratios), "worker_over_act_per_round": ratios,
            "inference_mode_over_no_grad": s["act_inference_mode"] / s["act_no_grad"],
            **{f"act_wall_steps_per_s_threads_{t}": s[f"act_wall_threads_{t}"] for t in args.threads},
        })
    return rows


COLUMNS = [
    ("cars", "K", "d"),
    ("worker_steps_per_cpu_s", "worker/s", ".0f"),
    ("act_steps_per_cpu_s", "act()/s", ".0f"),
    ("worker_over_act", "ratio", ".2f"),
    ("inference_mode_over_no_grad", "inf/nograd", ".2f"),
    ("sim_steps_per_cpu_s", "sim/s", ".0f"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cars", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="cars per worker (K)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads for act() (wall)")
    parser.add_argument("--seconds", type=float, default=1.5, help="wall seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every K")
    parser.add_argument("--track", default="reinvent_base")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "worker.json")
    args = parser.parse_args(argv)
    info = machine()
    print(machine_line(info))
    with tempfile.TemporaryDirectory(prefix="hotlap-bench-worker-") as tmp, redis_server() as redis_url, \
            simtrace_to(Path(tmp) / "simtrace.log"):
        rows = measure(args, redis_url, Path(tmp))
    print_table(COLUMNS + [(f"act_wall_steps_per_s_threads_{t}", f"act {t}thr wall", ".0f") for t in args.threads],
                rows)
    best = max(rows, key=lambda r: r["worker_steps_per_cpu_s"])
    summary = {"worst_worker_over_act": min(r["worker_over_act"] for r in rows),
               "fastest_cars_per_worker": best["cars"], "target_worker_over_act": 0.8}
    settings = {"cars": args.cars, "threads": args.threads, "seconds": args.seconds, "rounds": args.rounds,
                "track": args.track, "network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "sensor": "FRONT_FACING_CAMERA"}
    write_result(args.json, "worker", info, settings, rows, summary)
    print(f"worst worker/act() ratio {summary['worst_worker_over_act']:.2f} (target >= 0.80); "
          f"most car-steps per CPU second at K = {best['cars']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
