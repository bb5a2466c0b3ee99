"""The simulator worker service: plays episodes with the latest model and ships them to Redis.

One process steps K cars at once (`VectorRacingEnv`), runs batched policy inference, and pushes
one experience message per finished episode, tagged with the model version that played it.
Under the `sync` schedule (DeepRacer's) a car starts an episode only with a ticket for the
current version, so the trainer gets exactly its quota of on-policy episodes however many
workers there are. The loop is a short sequence of named steps; Redis trouble is retried with
capped backoff; the first SIGTERM finishes the current step and flushes logs, the second exits.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.config import ConfigError, WorkerConfig
from shared.deepracer_logs import (
    SimtraceRow,
    TrainingMetrics,
    continuous_action_label,
    simtrace_csv,
    simtrace_key,
    training_metrics_key,
)
from shared.evaluation import EvalEpisode, episodes_to_json, eval_metric, eval_start_fractions
from shared.experience import EPISODE_REWARD, EPISODE_STEPS, FINAL_CHUNK, Experience
from shared.logs import SIMTRACE_LOGGER
from shared.networks import ModelFormatError, check_architecture, load_state_from_bytes
from shared.run_files import RunFiles, load_run_files
from shared.service import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    RunFailed,
    ServerError,
    ServiceLoop,
    StopRequested,
)
from shared.store import REWARD_FUNCTION, ModelStore, ObjectNotFound
from shared.transport import STREAM_FULL, RunStatus, RunTransport
from simulator.env import EnvSettings, StepResult, VectorRacingEnv
from simulator.exploration import EpsilonSchedule
from simulator.reward import RewardFunctionError, hang_guard, hang_guard_seconds, load_reward_functions
from simulator.stacking import ObservationStack
from simulator.track import TrackError, load_run_track

log = logging.getLogger("hotlap.simulator")
trace_log = logging.getLogger(SIMTRACE_LOGGER)

IDLE_POLL_S = 0.05
TICKET_RETRY_S = 1.0
RUN_STATE_POLL_S = 0.05
STREAM_FULL_WAIT_S = 0.5
METRICS_UPLOAD_EVERY_S = 10.0


@dataclass
class CarEpisode:
    """What one car has played since its episode started (or since its last shipped chunk)."""

    observations: dict[str, list[np.ndarray]] = field(default_factory=dict)
    actions: list[Any] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    rows: list[SimtraceRow] = field(default_factory=list)  # kept until the episode ends: no partial episodes
    start_sim_time: float = 0.0
    number: int = 0  # the worker's 0-based episode counter, given when the episode starts
    earlier_chunks_reward: float = 0.0  # async schedule: reward of chunks already shipped
    earlier_chunks_steps: int = 0  # async schedule: steps of chunks already shipped

    def add(self, obs: dict[str, np.ndarray], action: Any, log_prob: float, value: float) -> None:
        for name, arr in obs.items():
            self.observations.setdefault(name, []).append(arr)
        self.actions.append(action)
        self.log_probs.append(log_prob)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class TrainerWait:
    """How long a worker waits on the trainer, and how fresh its models are when it starts using them.

    Sent in every heartbeat and logged at exit; bench/pipeline.py reads them. `waiting_s`: wall seconds
    with no car playing (sync: the iteration's tickets are used up until the next version) plus seconds
    blocked on a full experience stream. `publish_to_use_s`: from a version's `published_at` (its
    manifest, written by the trainer) to this worker acting with it, for each version it switches to
    while running (its first version also counts its own start-up, so it is left out); across machines
    it includes their clock offset.
    """

    waiting_s: float = 0.0
    switches: int = 0
    last_publish_to_use_s: float = 0.0
    max_publish_to_use_s: float = 0.0
    total_publish_to_use_s: float = 0.0

    def waited(self, seconds: float) -> None:
        self.waiting_s += seconds

    def switched(self, published_at: float, now: float) -> float:
        """Record a switch to a version published at `published_at` (unix seconds); returns the latency."""
        latency = max(0.0, now - published_at)
        self.switches += 1
        self.last_publish_to_use_s = latency
        self.max_publish_to_use_s = max(self.max_publish_to_use_s, latency)
        self.total_publish_to_use_s += latency
        return latency

    def fields(self) -> dict[str, float]:
        mean = self.total_publish_to_use_s / self.switches if self.switches else 0.0
        return {"waiting_s": round(self.waiting_s, 3), "version_switches": self.switches,
                "publish_to_use_s": round(self.last_publish_to_use_s, 4),
                "publish_to_use_max_s": round(self.max_publish_to_use_s, 4),
                "publish_to_use_mean_s": round(mean, 4)}


def load_inputs(store: ModelStore) -> RunFiles:
    try:
        return load_run_files(store)
    except ConfigError as e:
        raise RunFailed(str(e)) from e


class SimulatorWorker(ServiceLoop):
    def __init__(self, config: WorkerConfig, transport: RunTransport, store: ModelStore):
        super().__init__(transport, log, store, config.retry_give_up_s)
        self.config = config
        self.worker_index = -1
        self.resumed = False  # set-up found files this worker index wrote earlier in the run
        self.policy_version = -1
        self.episodes_played = 0
        self.episodes_started = 0
        self.steps_played = 0
        self.iteration = 0
        self.simtrace_rows: list[SimtraceRow] = []
        self.metrics = TrainingMetrics()
        self.last_heartbeat = time.monotonic()
        self.steps_at_last_heartbeat = 0
        self.last_metrics_upload = 0.0
        self.trainer_wait = TrainerWait()

    # ------------------------------------------------------------------ entry

    def run(self) -> int:
        """Exit status: EXIT_OK when the run is done or a signal stopped the worker,
        EXIT_RUN_FAILED (0, see shared.service) when the run failed, EXIT_NOT_SEEDED."""
        self.install_signal_handlers()
        if (exit_status := self.join_run()) is not None:
            return exit_status
        try:
            self._load_inputs()
            self.check_run_not_failed_in_store()
            if not self._wait_for_run():
                log.info("run %s is already done: nothing to play", self.config.run_id)
                return EXIT_OK
            self._setup()
            while not self.stop_requested:
                status, latest = self._poll_run_state()
                if status is not None and status.state == "done":
                    break
                self._refresh_policy(latest)
                self._claim_episodes()
                if not self.active.any():
                    self._sleep_waiting(IDLE_POLL_S)
                    self._heartbeat_if_due()
                    continue
                result = self._step_cars()
                self._ship_finished_episodes(result)
                self._heartbeat_if_due()
        except StopRequested:
            log.info("stop requested; leaving")
        except RewardFunctionError as e:
            self.record_failure(self.config.worker_name, str(e))
            return EXIT_RUN_FAILED
        except ServerError as e:
            return self.fail_on_server_error(self.config.worker_name, e)
        except RunFailed as e:
            log.error("run failed: %s", e)
            return EXIT_RUN_FAILED
        finally:
            self._flush_logs()
        log.info("worker %s done: %d episodes, %d steps, %.1fs waiting on the trainer", self.config.worker_name,
                 self.episodes_played, self.steps_played, self.trainer_wait.waiting_s)
        return EXIT_OK

    def _wait_for_run(self) -> bool:
        """Wait until the trainer has published version 0: True. False when the run is done (ip/done
        in the store, or the status a trainer set on finding it: a finished run started again has no
        version in a fresh Redis, so waiting for one would never end). Raises RunFailed."""
        if self.retrying("checking ip/done", self.store.is_done):
            return False
        announced = False
        while not self.stop_requested:
            status, version = self.retrying("reading run state", self.transport.run_state)
            if status is not None and status.state == "failed":
                raise RunFailed(status.reason)
            if status is not None and status.state == "done":
                return False
            if status is not None and status.state == "running" and version is not None:
                return True
            if not announced:
                log.info("waiting for the trainer to publish model version 0")
                announced = True
            time.sleep(0.5)
        raise StopRequested()

    def _load_inputs(self) -> RunFiles:
        self.inputs: RunFiles = self.retrying("loading run files", load_inputs, self.store)
        return self.inputs

    def _setup(self) -> None:
        self.worker_index = self.retrying("registering", self.transport.register_worker, self.config.worker_name)
        # run() loaded the files before waiting for the trainer; loaded here when set up alone (tests)
        inputs = self.inputs if hasattr(self, "inputs") else self._load_inputs()
        self._resume_worker_files()
        settings = inputs.settings
        num_cars = self.config.cars_per_worker or settings.cars_per_worker
        try:
            # one module per car: DeepRacer runs one car per simulator, so reward-function state is per car
            reward_functions = load_reward_functions(inputs.reward_source, num_cars, REWARD_FUNCTION,
                                                     time_limit_s=settings.reward_time_limit_s)
        except RewardFunctionError as e:
            self.record_failure(self.config.worker_name, str(e))
            raise RunFailed(str(e)) from e
        try:
            track = load_run_track(settings.track, inputs.track_npy, f"{self.store.url}/{settings.track_file}")
        except TrackError as e:
            self.record_failure(self.config.worker_name, str(e))
            raise RunFailed(str(e)) from e
        env_settings = EnvSettings(
            sensors=tuple(inputs.metadata.sensor),
            max_steps=settings.max_steps_per_episode,
            reverse=settings.reverse,
            round_robin_advance=settings.round_robin_advance if settings.change_start_position else 0.0,
            start_offset=settings.start_position_offset,
        )
        self.env = VectorRacingEnv(track, num_cars, env_settings, reward_functions,
                                   seed=self.config.seed + 7919 * self.worker_index)
        self.stack = ObservationStack(inputs.hyperparameters.stack_size)
        self.policy = inputs.build_policy()
        self.policy.eval()
        self.discrete = inputs.metadata.action_spec().kind == "discrete"
        self.exploration = self._exploration_schedule(inputs)
        self.exploration_steps = np.zeros(num_cars, np.int64)  # per car, as one DeepRacer simulator each
        self.num_cars = num_cars
        self.active = np.zeros(num_cars, dtype=bool)
        self.next_claim_at = 0.0
        self.next_state_poll_at = 0.0
        self.run_state: tuple[RunStatus | None, int | None] = (None, None)
        self.episodes = [CarEpisode() for _ in range(num_cars)]
        self.obs = self.stack.reset(self.env.reset())
        self.car_sim_time = np.zeros(num_cars)
        self.metrics = self._resumed_metrics(settings.best_model_metric)
        # Evaluation (DeepRacer's model picker, deepracer-formats.md §4, §7.4): worker 0 drives
        # MIN_EVAL_TRIALS greedy episodes of each version once its training episodes of it are over.
        self.evaluator = self.worker_index == 0 and settings.min_eval_trials > 0
        self.evaluating = np.zeros(num_cars, dtype=bool)  # cars in an evaluation episode
        self.eval_due = False  # this version's training share is over: evaluate before moving on
        self.eval_started = 0
        self.eval_results: list[EvalEpisode] = []
        log.info("worker %s (index %d): %d car(s) on %s, sensors %s, schedule %s", self.config.worker_name,
                 self.worker_index, num_cars, track.name, ",".join(inputs.metadata.sensor), settings.schedule)

    def _exploration_schedule(self, inputs: RunFiles) -> EpsilonSchedule | None:
        hp = inputs.hyperparameters
        if hp.exploration_type != "e-greedy":
            return None
        if not self.discrete:
            log.info("exploration_type e-greedy has no effect on a continuous action space "
                     "(DeepRacer explores it by sampling the policy either way)")
            return None
        return EpsilonSchedule(hp.e_greedy_value, hp.epsilon_steps)

    # ------------------------------------------------------------------ loop steps

    def _poll_run_state(self) -> tuple[RunStatus | None, int | None]:
        """Run status and latest version, read at most every RUN_STATE_POLL_S: one round trip,
        not one per step, however fast the cars step."""
        now = time.monotonic()
        if now >= self.next_state_poll_at:
            self.run_state = self.retrying("reading run state", self.transport.run_state)
            self.next_state_poll_at = now + RUN_STATE_POLL_S
        status, latest = self.run_state
        if status is not None and status.state == "failed":
            raise RunFailed(status.reason)
        return status, latest

    def _refresh_policy(self, latest: int | None) -> None:
        if latest is None or latest == self.policy_version:
            return
        if self._evaluation_pending():
            self.eval_due = True  # the run moved on: evaluate this version before taking the next
            return
        sync = self.inputs.settings.schedule == "sync"
        if sync and self.active.any():
            return  # finish the episodes of this version first; only whole episodes are on-policy
        if not sync and self.active.any():
            self._ship_chunks_of_running_episodes()
        load_started = time.monotonic()
        # An announced version can be pruned before a slow worker reads it: act with the latest then.
        model = self.retrying("loading model", self.store.load_version_or_latest, latest)
        try:
            check_architecture(self.policy, model.manifest, f"{self.store.url}/model/{model.version}")
            load_state_from_bytes(self.policy, model.weights)
        except ModelFormatError as e:
            self.record_failure(self.config.worker_name, str(e))
            raise RunFailed(str(e)) from e
        load_s = time.monotonic() - load_started
        published_at = model.manifest.get("published_at")
        if self.policy_version >= 0:
            self._finish_iteration()
            if isinstance(published_at, (int, float)):
                latency = self.trainer_wait.switched(float(published_at), time.time())
                log.info("acting with model version %d, published %.3fs ago (loading it took %.3fs)", model.version,
                         latency, load_s)
        else:
            log.info("acting with model version %d", model.version)
        self.policy_version = model.version
        self.next_claim_at = 0.0
        # sync: worker 0 evaluates once the version's quota is used up (while the trainer trains);
        # async has no quota, so it evaluates each version first, then trains with it
        self.eval_due, self.eval_started, self.eval_results = self.evaluator and not sync, 0, []

    def _evaluation_pending(self) -> bool:
        """Worker 0 has a version whose evaluation episodes are not all done."""
        return (self.evaluator and self.policy_version >= 0
                and len(self.eval_results) < self.inputs.settings.min_eval_trials)

    def _claim_episodes(self) -> None:
        idle = np.flatnonzero(~self.active)
        if idle.size == 0 or self.policy_version < 0:
            return
        if self.policy_version >= self.inputs.settings.max_iterations:
            self.eval_due = self.evaluator  # the last version trains nothing: only its evaluation is left
        if self.eval_due and self._evaluation_pending():
            self._start_evaluations(idle)
            return
        if self.inputs.settings.schedule == "async":
            self._start_episodes(idle)
            return
        if time.monotonic() < self.next_claim_at:
            return
        claimed = []
        for car in idle:
            ticket = self.retrying("claiming an episode", self.transport.claim_ticket, self.policy_version)
            if ticket <= 0:
                # Quota used up. Ask again now and then: the trainer re-issues the tickets of
                # episodes whose worker died, and a stopping worker hands its tickets back.
                # Worker 0 evaluates the version now, while the trainer trains on its episodes.
                self.next_claim_at = time.monotonic() + TICKET_RETRY_S
                self.eval_due = self.evaluator
                break
            claimed.append(car)
        if claimed:
            self._start_episodes(np.array(claimed))

    def _start_evaluations(self, idle: np.ndarray) -> None:
        """Start the version's remaining evaluation trials on idle cars, once no car of this worker
        is in a training episode (its metrics records stay in DeepRacer's order: training, then
        evaluation). Trial i starts at i/MIN_EVAL_TRIALS of the lap. Evaluation episodes claim no
        ticket and are never sent to the trainer: they are not training experience."""
        if (self.active & ~self.evaluating).any() or not self._evaluation_pending():
            return
        trials = self.inputs.settings.min_eval_trials
        cars = idle[:trials - self.eval_started]
        if cars.size == 0:
            return
        fractions = eval_start_fractions(trials)[self.eval_started:self.eval_started + cars.size]
        self.obs = self.stack.reset(self.env.reset(car_ids=cars, start_fraction=np.array(fractions)), cars)
        self.active[cars] = True
        self.evaluating[cars] = True
        for car in cars:
            self.episodes[car] = CarEpisode(start_sim_time=float(self.car_sim_time[car]), number=-1)
        self.eval_started += int(cars.size)

    def _start_episodes(self, cars: np.ndarray) -> None:
        # Numbered in Redis per worker index: a restarted worker goes on from its last number.
        first = self.retrying("numbering episodes", self.transport.start_episodes, self.worker_index, len(cars))
        self.active[cars] = True
        for number, car in enumerate(cars, start=first):
            self.episodes[car] = CarEpisode(start_sim_time=float(self.car_sim_time[car]), number=number)
        self.episodes_started = first + len(cars)

    def _step_cars(self) -> StepResult:
        cars = np.flatnonzero(self.active)
        training = cars[~self.evaluating[cars]]
        # float64 end to end: params, simtrace and metrics carry the action space's numbers exactly
        steering = np.zeros(self.num_cars, np.float64)
        speed = np.zeros(self.num_cars, np.float64)
        # an action index per car (discrete) or the normalised (steering, speed) pair (continuous)
        actions = (np.zeros(self.num_cars, np.int64) if self.discrete else np.zeros((self.num_cars, 2), np.float32))
        if training.size:
            epsilon = None
            if self.exploration is not None:
                epsilon = self.exploration.epsilon(self.exploration_steps[training])
                self.exploration_steps[training] += 1
            # inference for active cars only
            act = self.policy.act({name: arr[training] for name, arr in self.obs.items()}, epsilon=epsilon)
            steering[training], speed[training], actions[training] = act.steering_deg, act.speed, act.action
            for i, car in enumerate(training):
                car_obs = {name: arr[car] for name, arr in self.obs.items()}
                self.episodes[car].add(car_obs, actions[car].copy(), float(act.log_prob[i]), float(act.value[i]))
        evaluating = cars[self.evaluating[cars]]
        if evaluating.size:  # greedy, as DeepRacer's evaluation phase
            greedy = self.policy.act({name: arr[evaluating] for name, arr in self.obs.items()}, deterministic=True)
            steering[evaluating], speed[evaluating], actions[evaluating] = greedy.steering_deg, greedy.speed, \
                greedy.action
        with hang_guard(hang_guard_seconds(self.inputs.settings.reward_time_limit_s, len(cars))):
            result = self.env.step(steering, speed, self.active)
        self._record_steps(result, actions)
        self.obs = self.stack.push(result.obs)
        self.steps_played += len(cars)
        return result

    def _record_steps(self, result: StepResult, actions: np.ndarray) -> None:
        wall = time.time()
        for car in np.flatnonzero(self.active):
            self.episodes[car].rewards.append(float(result.reward[car]))
            self.car_sim_time[car] = result.sim_time[car]
            if self.evaluating[car]:
                continue  # DeepRacer's simtrace and SIM_TRACE_LOG hold training steps only
            action_label = (str(int(actions[car])) if self.discrete else
                            continuous_action_label(float(result.steering_angle[car]), float(result.speed[car])))
            row = SimtraceRow(
                episode=self.episodes[car].number, steps=float(result.steps[car]), x=float(result.x[car]),
                y=float(result.y[car]), yaw=float(result.heading[car]),
                steer=float(result.steering_angle[car]), throttle=float(result.speed[car]),
                action=action_label, reward=float(result.reward[car]), done=bool(result.done[car]),
                all_wheels_on_track=bool(result.all_wheels_on_track[car]),
                progress=float(result.progress[car]), closest_waypoint=int(result.closest_waypoint[car]),
                track_len=float(result.track_len[car]), tstamp=float(result.sim_time[car]),
                episode_status=str(result.status[car]), wall_clock=wall,
            )
            self.episodes[car].rows.append(row)
            if self.config.sim_trace_log:
                trace_log.info(row.log_line())

    def _ship_finished_episodes(self, result: StepResult) -> None:
        finished = np.flatnonzero(self.active & result.done)
        if finished.size == 0:
            return
        training = finished[~self.evaluating[finished]]
        # Only a truncated episode (max steps) bootstraps from the value of its last observation; a
        # terminated one ends at 0. Most episodes terminate, and a value() call per step that ends one
        # cost a worker ~5% of its step time at 16 cars (bench/worker.py).
        truncated = training[~result.terminated[training]]
        bootstrap = np.zeros(self.num_cars, np.float32)
        if truncated.size:
            bootstrap[truncated] = self.policy.value({n: a[truncated] for n, a in self.obs.items()})
        for car in training:
            self._ship(int(car), bool(result.terminated[car]), float(bootstrap[car]),
                       status=str(result.status[car]), progress=float(result.progress[car]))
        for car in finished[self.evaluating[finished]]:
            self._end_evaluation(int(car), status=str(result.status[car]), progress=float(result.progress[car]))
        self.active[finished] = False
        self.evaluating[finished] = False
        self.obs = self.stack.reset(self.env.reset(car_ids=finished), finished)

    def _end_evaluation(self, car: int, status: str, progress: float) -> None:
        """Record one evaluation episode; with the version's last one, report them to the trainer."""
        episode = self.episodes[car]
        elapsed_ms = int(round(float(self.car_sim_time[car]) * 1000)) - int(round(episode.start_sim_time * 1000))
        result = EvalEpisode(progress=progress, reward=sum(episode.rewards), elapsed_ms=elapsed_ms, status=status)
        self.eval_results.append(result)
        self.metrics.add_evaluation(reward=result.reward, elapsed_ms=elapsed_ms, progress=progress, status=status)
        trials = self.inputs.settings.min_eval_trials
        if len(self.eval_results) < trials:
            return
        laps = sum(e.progress >= 100.0 for e in self.eval_results)
        log.info("evaluation of model version %d: %d trial(s), progress %.1f%%, %d lap(s), reward %.2f, "
                 "%s %.6g", self.policy_version, trials, eval_metric(self.eval_results, "progress"), laps,
                 eval_metric(self.eval_results, "reward"), self.inputs.settings.best_model_metric,
                 eval_metric(self.eval_results, self.inputs.settings.best_model_metric))
        self.retrying("reporting evaluation", self.transport.report_evaluation, self.policy_version,
                       episodes_to_json(self.eval_results))
        self._upload_metrics()

    def _ship_chunks_of_running_episodes(self) -> None:
        """Async schedule: cut running episodes at a version change so every chunk has one version."""
        running = np.flatnonzero(self.active & ~self.evaluating)
        values = self.policy.value({n: a[running] for n, a in self.obs.items()})
        for i, car in enumerate(running):
            if len(self.episodes[car]):
                self._push(self._experience(int(car), terminated=False, bootstrap=float(values[i]),
                                            status="in_progress", progress=0.0, final=False))
                previous = self.episodes[car]
                self.episodes[car] = CarEpisode(
                    rows=previous.rows, start_sim_time=previous.start_sim_time, number=previous.number,
                    earlier_chunks_reward=previous.earlier_chunks_reward + sum(previous.rewards),
                    earlier_chunks_steps=previous.earlier_chunks_steps + len(previous))

    def _ship(self, car: int, terminated: bool, bootstrap: float, status: str, progress: float) -> None:
        episode = self.episodes[car]
        exp = self._experience(car, terminated, bootstrap, status, progress, final=True)
        self._push(exp)
        start_ms = int(round(episode.start_sim_time * 1000))
        end_ms = int(round(float(self.car_sim_time[car]) * 1000))
        self.simtrace_rows.extend(episode.rows)
        # the step rewards as the reward function returned them (the experience holds float32 copies)
        reward = episode.earlier_chunks_reward + sum(episode.rewards)
        self.metrics.add_episode(episode=episode.number, reward=reward, elapsed_ms=end_ms - start_ms,
                                 progress=progress, status=status)
        self.episodes_played += 1

    def _experience(self, car: int, terminated: bool, bootstrap: float, status: str, progress: float,
                    final: bool) -> Experience:
        episode = self.episodes[car]
        actions = np.asarray(episode.actions, dtype=np.int64 if self.discrete else np.float32)
        extra: dict[str, Any] = {FINAL_CHUNK: final}
        if final:  # the whole episode, earlier chunks included: what episode statistics count
            extra[EPISODE_REWARD] = episode.earlier_chunks_reward + sum(episode.rewards)
            extra[EPISODE_STEPS] = episode.earlier_chunks_steps + len(episode)
        return Experience(
            run_id=self.config.run_id, worker_name=self.config.worker_name, worker_index=self.worker_index,
            model_version=self.policy_version, episode=episode.number,
            observations={name: np.stack(frames) for name, frames in episode.observations.items()},
            actions=actions,
            log_probs=np.asarray(episode.log_probs, dtype=np.float32),
            values=np.asarray(episode.values, dtype=np.float32),
            rewards=np.asarray(episode.rewards, dtype=np.float32),
            terminated=terminated, bootstrap_value=bootstrap, status=status, progress=progress,
            elapsed_s=float(self.car_sim_time[car]) - episode.start_sim_time,
            extra=extra,
        )

    def _push(self, exp: Experience) -> None:
        """Add `exp` to the stream once it fits under the stream's byte bound (one atomic check-and-add
        in Redis). Back-pressure: a stalled trainer makes workers wait instead of filling Redis memory;
        while waiting they keep heartbeating and watching the run status (a failed run raises RunFailed,
        a finished one is left as below). A stop request ends the wait with StopRequested; the car stays
        active, so its sync ticket is handed back. Once the run is over (done or failed) Redis takes
        nothing more: the episode is not sent."""
        fields = exp.encode()
        while (entry_id := self.retrying("pushing experience", self.transport.push_fields, fields)) == STREAM_FULL:
            if self.stop_requested:
                raise StopRequested()
            self._poll_run_state()
            self._sleep_waiting(STREAM_FULL_WAIT_S)
            self._heartbeat_if_due()
        if entry_id is None:
            log.info("run over (done or failed): episode %d not sent", exp.episode)

    def _sleep_waiting(self, seconds: float) -> None:
        started = time.monotonic()  # measured, not assumed: a loaded machine oversleeps
        time.sleep(seconds)
        self.trainer_wait.waited(time.monotonic() - started)

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat < self.config.heartbeat_s:
            return
        recent_rate = (self.steps_played - self.steps_at_last_heartbeat) / max(now - self.last_heartbeat, 1e-9)
        self.retrying("heartbeat", self.transport.heartbeat, self.config.worker_name, {
            "index": self.worker_index, "version": self.policy_version, "episodes": self.episodes_played,
            "steps": self.steps_played, "steps_per_s": round(recent_rate, 1), **self.trainer_wait.fields(),
            "host": socket.gethostname(),  # `hotlap status`: where the worker runs (its name may be a pod's)
        })
        self.last_heartbeat = now
        self.steps_at_last_heartbeat = self.steps_played
        if now - self.last_metrics_upload >= METRICS_UPLOAD_EVERY_S:
            self._upload_metrics()

    # ------------------------------------------------------------------ DeepRacer logs

    def _multi_worker(self) -> bool:
        return self.inputs.settings.num_workers > 1 or self.worker_index > 0

    def _finish_iteration(self) -> None:
        """A new model version starts a new simtrace iteration file, as DeepRacer's workers do."""
        self._upload_simtrace()
        self._upload_metrics()
        self.iteration += 1
        self.retrying("recording the iteration", self.transport.set_worker_iteration, self.worker_index,
                      self.iteration)
        self.metrics.new_iteration()

    def _resume_worker_files(self) -> None:
        """Continue the episode numbers and simtrace iterations of this worker index in this run (a
        restarted worker, or a new one reusing a free index), so no file it wrote is overwritten.
        An iteration whose simtrace file exists already was closed by the earlier worker: go on with
        the next one."""
        state = self.retrying("reading the worker's files state", self.transport.worker_log_state, self.worker_index)
        if state is None:
            self.resumed = False
            return
        self.resumed = True
        self.episodes_started, self.iteration = state
        if self.retrying("checking simtrace", self.store.objects.exists, self._simtrace_key()):
            self.iteration += 1
            self.retrying("recording the iteration", self.transport.set_worker_iteration, self.worker_index,
                          self.iteration)
        log.info("worker index %d continues its files: simtrace iteration %d, episode %d", self.worker_index,
                 self.iteration, self.episodes_started)

    def _resumed_metrics(self, best_model_metric: str) -> TrainingMetrics:
        """A fresh TrainingMetrics, or (resuming this index) the records already in the store, going on
        after them: the next record is this worker's next episode number."""
        metrics = TrainingMetrics(best_model_metric)
        if not self.resumed:
            return metrics
        metrics.next_episode = self.episodes_started  # numbers given out before and never ended are skipped
        key = training_metrics_key(self.worker_index)
        try:
            text = self.retrying("reading metrics", self.store.get_text, key)
        except ObjectNotFound:
            text = None
        if text is None:
            return metrics
        try:
            metrics.resume(text, next_episode=self.episodes_started)
        except ValueError as e:  # not ours to lose silently: say so, then start the file afresh
            log.warning("%s/%s is unreadable (%s); starting it afresh", self.store.url, key, e)
            metrics = TrainingMetrics(best_model_metric)
            metrics.next_episode = self.episodes_started
        return metrics

    def _simtrace_key(self) -> str:
        return simtrace_key(self.worker_index, self.iteration, self._multi_worker())

    def _upload_simtrace(self) -> None:
        if not self.simtrace_rows:
            return
        key = self._simtrace_key()
        rows = sorted(self.simtrace_rows, key=lambda row: row.episode)  # cars end episodes out of start order
        self.retrying("uploading simtrace", self.store.put_text, key, simtrace_csv(rows))
        self.simtrace_rows = []

    def _upload_metrics(self) -> None:
        if self.metrics.records:
            self.retrying("uploading metrics", self.store.put_text,
                           training_metrics_key(self.worker_index), self.metrics.to_json())
        self.last_metrics_upload = time.monotonic()

    def _flush_logs(self) -> None:
        if not hasattr(self, "active"):  # set-up never finished: nothing played, nothing to flush
            return
        try:
            unfinished = int((self.active & ~self.evaluating).sum())
            if unfinished and self.inputs.settings.schedule == "sync":
                # Let the other workers play these episodes now instead of after the trainer's stall timeout.
                self.retrying("releasing tickets", self.transport.release_tickets, self.policy_version, unfinished)
            self._upload_simtrace()
            self.metrics.flush()
            self._upload_metrics()
        except StopRequested:
            log.warning("stopped before the last simtrace/metrics upload")
        except ServerError as e:
            log.warning("could not upload the last simtrace/metrics: %s", e)
