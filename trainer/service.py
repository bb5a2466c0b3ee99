"""The trainer service: collects each iteration's episodes from Redis, runs PPO, publishes versions.

    publish version 0 (or resume from the store's latest version)
    for each iteration: open tickets → collect episodes of the current version → ppo_update
                        → log the episodes → publish version k+1 (files, then the latest pointer)
                        → ack the episodes
    write ip/done, set status done

Experience is acknowledged only after the version trained on it is published, so a trainer that
dies mid-iteration gets the same episodes re-delivered when it restarts: no lost work. Entries
that cannot be trained on (trainer.intake) are acknowledged at once and counted by reason; the
run's accounting (produced = consumed + dropped) goes to logs/accounting.json after every iteration and at
the end; a session resumed on a fresh Redis adds the earlier sessions' counters once.
A non-finite loss fails the run, as DeepRacer's "NaN detected in loss function, aborting training".
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shared.config import ConfigError, TrainerConfig, max_steps_per_iteration
from shared.deepracer_logs import episode_log_csv
from shared.evaluation import CheckpointIndex, EvaluationError, episodes_from_json, eval_metric
from shared.experience import Experience
from shared.networks import ModelFormatError, architecture, check_architecture, load_state_from_bytes, state_to_bytes
from shared.run_files import RunFiles, load_run_files
from shared.service import (
    EXIT_LEASE,
    EXIT_OK,
    EXIT_RUN_FAILED,
    RunFailed,
    ServerError,
    ServiceLoop,
    StopRequested,
)
from shared.store import (
    ACCOUNTING_LOG,
    CHECKPOINTS_INDEX,
    COACH_EPISODE_LOG,
    EPISODE_LOG,
    HYPERPARAMETERS,
    PRETRAINED_MANIFEST,
    PRETRAINED_WEIGHTS,
    WEIGHTS_FILE,
    ModelStore,
    ObjectNotFound,
    StoreError,
    sha256,
)
from shared.transport import ACCOUNTING_FIELDS, DROP_REASONS, RunTransport, TransportError
from trainer.coach_log import CoachLog
from trainer.intake import Verdict, experience_spec, screen
from trainer.lease import LeaseError, TrainerLease
from trainer.ppo import PPOSettings, kl_summary, make_optimizer, ppo_update
from trainer.tensorboard import TensorBoardLog

log = logging.getLogger("hotlap.trainer")

CONSUMER_NAME = "trainer"
READ_BATCH = 16
WAITING_LOG_EVERY_S = 15.0
HEARTBEAT_EVERY_S = 5.0
EVALUATION_POLL_S = 1.0


@dataclass
class Batch:
    """One iteration's worth of experience, and the stream entries to acknowledge once trained."""

    episodes: list[Experience] = field(default_factory=list)
    entry_ids: list[bytes] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # by reason, while collecting this batch

    @property
    def num_steps(self) -> int:
        return sum(e.num_steps for e in self.episodes)

    @property
    def whole_episodes(self) -> list[Experience]:
        """The messages that end an episode (all of them under sync; under async not the chunks
        of episodes still running at a version change): what the quota and episode statistics count."""
        return [e for e in self.episodes if e.ends_episode]

    @property
    def num_episodes(self) -> int:
        return sum(e.ends_episode for e in self.episodes)

    @property
    def num_chunks(self) -> int:
        """Chunks of running episodes (async): trained on, but no episode of the quota."""
        return len(self.episodes) - self.num_episodes


def episode_stats(episodes: list[Experience]) -> dict[str, float]:
    """Means over whole episodes (`Batch.whole_episodes`): reward of the whole episode, its final
    progress (%), and laps completed. 0.0 for an iteration that ended no episode (a step cap filled
    by chunks alone), so the manifest and progress hash stay numbers."""
    if not episodes:
        return {"mean_reward": 0.0, "mean_progress": 0.0, "laps_completed": 0.0}
    return {"mean_reward": float(np.mean([e.episode_reward for e in episodes])),
            "mean_progress": float(np.mean([e.progress for e in episodes])),
            "laps_completed": float(sum(e.status == "lap_complete" for e in episodes))}


class DeviceError(RuntimeError):
    """HOTLAP_DEVICE asks for a device this process cannot see."""


def resolve_device(name: str) -> torch.device:
    """HOTLAP_DEVICE (`auto`, `cpu`, `cuda`) -> the torch device to train on.

    Raises DeviceError, in one line, when `cuda` is asked for and no GPU is visible: a CPU
    build of torch, or a container started without a GPU reservation.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build")
        raise DeviceError(f"HOTLAP_DEVICE=cuda but no CUDA GPU is visible ({build}); run the trainer's GPU "
                          "image with a GPU reserved (infra/docker-compose.gpu.yml, infra/k8s/overlays/gpu), "
                          "or set HOTLAP_DEVICE=cpu")
    return torch.device(name)


class NonFiniteLoss(RunFailed):
    """PPO produced a NaN/inf loss: the run fails, as DeepRacer's training worker aborts."""


class TrainerService(ServiceLoop):
    def __init__(self, config: TrainerConfig, transport: RunTransport, store: ModelStore):
        super().__init__(transport, log, store, config.retry_give_up_s)
        self.config = config
        self.lease: TrainerLease | None = None
        self.published: int | None = None  # the latest version this trainer published or resumed from
        self.device = resolve_device(config.device)
        self.episode_rows: list[tuple[Any, ...]] = []
        self.last_evaluation_poll = float("-inf")
        self.evaluator_silent = False  # an evaluation timed out: stop waiting until one arrives
        # After a restart, first re-read what the last trainer left unacked, walking a cursor.
        self.pending_cursor: bytes | None = b"0"
        self.last_beat = float("-inf")
        self.drop_reasons_logged: set[str] = set()

    # ------------------------------------------------------------------ entry

    def run(self) -> int:
        """Exit status: EXIT_OK when the run is done (or stopped by a signal), EXIT_RUN_FAILED
        (0, see shared.service) when it failed, EXIT_NOT_SEEDED, EXIT_LEASE."""
        self.install_signal_handlers()
        if (exit_status := self.join_run()) is not None:
            return exit_status
        try:
            files = self._load_files()
            if self._run_already_ended():
                return EXIT_OK
            self.lease = TrainerLease(self.transport, self.config.lease_s)
            self.retrying("taking the trainer lease", self.lease.acquire)
            self.lease.start_renewing()
            try:
                self._train_run(files)
            finally:
                self.lease.release()
            return EXIT_OK
        except StopRequested:
            log.info("stopped before the run finished; restart the trainer to resume from the latest version")
            return EXIT_OK
        except ConfigError as e:
            self.record_failure("trainer", str(e))
            return EXIT_RUN_FAILED
        except ServerError as e:
            return self.fail_on_server_error("trainer", e)
        except NonFiniteLoss as e:
            self.record_failure("trainer", str(e))
            self._close_accounting()
            return EXIT_RUN_FAILED
        except RunFailed as e:
            log.error("run failed: %s", e)
            self._close_accounting()
            return EXIT_RUN_FAILED
        except LeaseError as e:
            log.error("%s", e)
            return EXIT_LEASE

    def _run_already_ended(self) -> bool:
        """A done run is not trained again; a failed run stays failed (RunFailed with its reason):
        a restarted trainer must not train on what failed it again."""
        if self.retrying("checking ip/done", self.store.is_done):
            log.info("run %s is already done (ip/done exists); nothing to train", self.config.run_id)
            self.retrying("setting status", self.transport.set_status, "done")
            return True
        self.check_run_not_failed_in_store()
        self.check_run_not_failed()
        return False

    def _train_run(self, files: RunFiles) -> None:
        self._setup(files)
        for version in range(self.version, self.max_iterations):
            collect_started = time.monotonic()
            batch = self._collect(version)
            collect_seconds = time.monotonic() - collect_started
            if self.files.settings.schedule == "sync":
                # Moving on: what a worker would still play with this version would be stale.
                self.retrying("closing tickets", self.transport.close_tickets, version)
            self._beat("training", version, force=True)
            stats = self._train(version, batch)
            # Next to train_seconds in the progress hash and the manifest: the share of an
            # iteration the trainer waited for experience (bench/pipeline.py reads both).
            stats["collect_seconds"] = collect_seconds
            self._beat("publishing", version, force=True)
            # Log before publishing: a trainer killed in between re-trains this iteration
            # on resume, and the reloaded log drops rows of iterations that were never published.
            self._log_iteration(version, batch, stats)
            # Worker 0 evaluates each version before it takes the next (deepracer-formats.md §7.4):
            # publishing only after version's evaluation means no version goes unevaluated.
            self._await_evaluation(version)
            self._publish(version + 1, stats)
            self._acknowledge(batch)
        self._await_evaluation(self.max_iterations)
        self._finish()

    # ------------------------------------------------------------------ set-up

    def _load_files(self) -> RunFiles:
        files: RunFiles = self.retrying("loading run files", load_run_files, self.store)
        return files

    def _setup(self, files: RunFiles) -> None:
        torch.manual_seed(self.config.seed)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        self.files = files
        hp = files.hyperparameters
        self.settings = PPOSettings.from_hyperparameters(hp.model_dump())
        self.coach = CoachLog(self.settings)
        self.tensorboard = TensorBoardLog(self.config.tensorboard_dir) if self.config.tensorboard_dir else None
        self.max_iterations = files.settings.max_iterations
        self.episodes_per_iteration = hp.num_episodes_between_training
        self.step_cap = max_steps_per_iteration(files.metadata.neural_network, files.settings.max_steps_per_iteration)
        # DeepRacer prints the resolved dict after this line; deepracer-utils parses it.
        resolved = hp.to_json()
        log.info("Using the following hyper-parameters\n%s", resolved)
        self.retrying("writing hyperparameters", self.store.put_text, HYPERPARAMETERS, resolved)

        self.spec = experience_spec(self.config.run_id, files)
        self.policy = files.build_policy()
        self.policy.to(self.device)
        self.optimizer = make_optimizer(self.policy, self.settings)
        self.manifest_base = {
            "run_id": self.config.run_id,
            "format": "safetensors",
            **architecture(self.policy),  # checked by every reader before it loads the weights
            "action_space": json.loads(files.metadata.model_dump_json())["action_space"],
        }
        self.checkpoints = self._load_checkpoint_index(files.settings.best_model_metric)
        self.retrying("ensuring the consumer group", self.transport.ensure_group)
        self._carry_accounting()
        self.version = self._resume_or_start()
        self.published = self.version
        self._set_status("running")
        self.retrying("announcing version", self.transport.announce_version, self.version)
        log.info("trainer on %s: iterations %d..%d, %d episodes per iteration, network %s", self.device,
                 self.version, self.max_iterations, self.episodes_per_iteration, files.metadata.neural_network)

    def _load_checkpoint_index(self, metric: str) -> CheckpointIndex:
        """The stored best/last checkpoints, so a restarted trainer keeps its best."""
        try:
            text = self.retrying("reading the checkpoint index", self.store.get_text, CHECKPOINTS_INDEX)
        except ObjectNotFound:
            return CheckpointIndex(metric)
        try:
            return CheckpointIndex.parse(text, metric, f"{self.store.url}/{CHECKPOINTS_INDEX}")
        except EvaluationError as e:
            self.record_failure("trainer", str(e))
            raise RunFailed(str(e)) from e

    def _resume_or_start(self) -> int:
        latest = self.retrying("reading latest version", self.store.latest_version)
        if latest is None:
            self._set_status("starting")
            extra = self._load_pretrained() if self.files.settings.pretrained else {}
            self._publish(0, {}, extra)
            return 0
        model = self.retrying("loading latest version", self.store.load_version, latest, True)
        try:
            check_architecture(self.policy, model.manifest, f"{self.store.url}/model/{latest}")
            load_state_from_bytes(self.policy, model.weights)
        except ModelFormatError as e:
            self.record_failure("trainer", str(e))
            raise RunFailed(str(e)) from e
        if model.optimizer is not None:
            state = torch.load(io.BytesIO(model.optimizer), map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state)
        self._load_episode_log(latest)
        self._load_coach_log(latest)
        log.info("resuming from model version %d", latest)
        return latest

    def _load_pretrained(self) -> dict[str, Any]:
        """A cloned run (training_params.yaml PRETRAINED_MODEL): load the weights the seed copied in,
        so that version 0 is the source version; returns what version 0's manifest records of it."""
        where = f"{self.store.url}/{PRETRAINED_WEIGHTS}"
        try:
            manifest = json.loads(self.retrying("reading pretrained manifest", self.store.get_text,
                                                PRETRAINED_MANIFEST))
            weights: bytes = self.retrying("reading pretrained weights", self.store.objects.get, PRETRAINED_WEIGHTS)
            if manifest.get("files", {}).get(WEIGHTS_FILE) != sha256(weights):
                raise ModelFormatError(f"{where} does not match the sha256 in {PRETRAINED_MANIFEST}")
            check_architecture(self.policy, manifest, where)
            load_state_from_bytes(self.policy, weights)
        except (ObjectNotFound, ValueError, ModelFormatError) as e:
            message = f"cannot start from the pretrained model {self.files.settings.pretrained}: {e}"
            self.record_failure("trainer", message)
            raise RunFailed(message) from e
        log.info("version 0 is the pretrained model %s", self.files.settings.pretrained)
        return {"pretrained": {"source": self.files.settings.pretrained, "version": manifest.get("version"),
                               "run_id": manifest.get("run_id"), "sha256": sha256(weights)}}

    def _load_episode_log(self, latest: int) -> None:
        """Rows of the iterations that produced versions 1..latest; later rows are re-logged."""
        try:
            text = self.store.get_text(EPISODE_LOG)
        except ObjectNotFound:
            return
        rows = list(csv.reader(io.StringIO(text)))[1:]
        self.episode_rows = [tuple(row) for row in rows if int(row[0]) < latest]

    def _load_coach_log(self, latest: int) -> None:
        try:
            self.coach.resume(self.store.get_text(COACH_EPISODE_LOG), latest)
        except ObjectNotFound:
            return

    # ------------------------------------------------------------------ iteration steps

    def _collect(self, version: int) -> Batch:
        """Gather this iteration's episodes: exactly-on-policy under sync, bounded-stale under async."""
        schedule = self.files.settings.schedule
        oldest_accepted = version if schedule == "sync" else version - self.files.settings.max_staleness
        if schedule == "sync":
            self.retrying("opening tickets", self.transport.open_tickets, version, self.episodes_per_iteration)
        batch = Batch()
        last_arrival = last_log = time.monotonic()
        while batch.num_episodes < self.episodes_per_iteration:
            self._beat("collecting", version)
            self._credit_evaluations()
            if batch.num_steps >= self.step_cap:
                log.info("step cap of %d reached: %d steps in %d episodes and %d chunks", self.step_cap,
                         batch.num_steps, batch.num_episodes, batch.num_chunks)
                break
            if self.stop_requested:
                raise StopRequested()
            self.check_run_not_failed()
            self._check_lease()
            # never more than the quota (a chunk among them only leaves the quota unfilled a while longer)
            wanted = min(READ_BATCH, self.episodes_per_iteration - batch.num_episodes)
            deliveries = self.retrying("reading experience", self.transport.read_experience, CONSUMER_NAME,
                                       wanted, 1000, self.pending_cursor, self.spec.max_payload_bytes)
            if self.pending_cursor is not None:
                if not deliveries:
                    self.pending_cursor = None  # all re-read: from now on, new entries only
                    continue
                self.pending_cursor = deliveries[-1].entry_id
            for delivery in deliveries:
                verdict = screen(delivery, self.spec, oldest_accepted, version)
                if verdict.experience is not None and batch.num_steps >= self.step_cap:
                    # Past DeepRacer's per-iteration step cap: its trainer takes no more episodes once
                    # its memory holds that many steps (deepracer-formats.md §7.3).
                    verdict = Verdict(None, "over_cap", f"the iteration holds {batch.num_steps} steps already "
                                                        f"(cap {self.step_cap})")
                if verdict.experience is None:
                    self._drop(delivery.entry_id, verdict.reason, verdict.detail)
                    batch.dropped[verdict.reason] += 1
                else:
                    batch.episodes.append(verdict.experience)
                    batch.entry_ids.append(delivery.entry_id)
                    last_arrival = time.monotonic()
            now = time.monotonic()
            if now - last_arrival > self.config.stall_timeout_s and schedule == "sync":
                # Episodes whose worker died never arrive: let live workers play them again.
                log.warning("no experience for %.0fs; reissuing %d episode tickets", now - last_arrival,
                            self.episodes_per_iteration - batch.num_episodes)
                self.retrying("reissuing tickets", self.transport.reissue_tickets, version, batch.num_episodes)
                last_arrival = now
            if now - last_log > WAITING_LOG_EVERY_S:
                log.info("iteration %d: %d/%d episodes", version, batch.num_episodes, self.episodes_per_iteration)
                last_log = now
        return batch

    def _beat(self, step: str, version: int, force: bool = False) -> None:
        """The trainer's heartbeat in Redis (what `hotlap health --role trainer` probes): beaten
        between steps from the main loop, so a wedged loop stops it; a PPO update beats before and after."""
        now = time.monotonic()
        if force or now - self.last_beat >= HEARTBEAT_EVERY_S:
            self.retrying("heartbeat", self.transport.trainer_beat, {"step": step, "version": version})
            self.last_beat = now

    def _drop(self, entry_id: bytes, reason: str, detail: str) -> None:
        """Acknowledge and count an entry that will not be trained on; log each reason once
        (a flood of bad messages must not bury the log), with the first offender's details."""
        self.retrying("dropping experience", self.transport.acknowledge, [entry_id], f"dropped_{reason}")
        if reason in self.drop_reasons_logged or reason == "stale" and self.files.settings.schedule == "async":
            return
        self.drop_reasons_logged.add(reason)
        message = f"dropping {reason} experience {entry_id.decode()}: {detail}"
        log.warning("%s (further %s drops are counted in %s, not logged)", message, reason,
                    self.transport.keys.accounting)
        if reason != "stale":
            self.retrying("reporting", self.transport.report_error, "trainer", message)

    def _train(self, version: int, batch: Batch) -> dict[str, float]:
        started = time.monotonic()
        self.coach.rollouts(version, batch.episodes)
        self.policy.train()
        try:
            stats = ppo_update(self.policy, self.optimizer, batch.episodes, self.settings, self.device,
                               on_epoch=self.coach.on_epoch)
        except FloatingPointError as e:  # ppo_update refuses to step on a non-finite loss
            raise NonFiniteLoss(f"NaN detected in loss function, aborting training: {e}") from e
        self.policy.eval()
        stats["train_seconds"] = time.monotonic() - started
        stats.update(episode_stats(batch.whole_episodes))
        return stats

    def _set_status(self, state: str) -> None:
        """Set the run state; a run another process failed meanwhile stays failed (RunFailed)."""
        effective = self.retrying("setting status", self.transport.set_status, state)
        if effective == "failed":
            self.check_run_not_failed()  # raises RunFailed with the recorded reason

    def _check_lease(self) -> None:
        if self.lease is None:
            return
        self.lease.check()
        if self.lease.take_reacquired():
            # The lease expired while this trainer was away and nobody held it when it came back;
            # someone may still have trained meanwhile and let it go: then this one's update is stale.
            latest = self.retrying("reading the latest version", self.store.latest_version)
            if latest != self.published:
                raise LeaseError(f"another trainer published model version {latest} while this one was paused "
                                 f"(it holds version {self.published}); stopping without publishing")

    def _publish(self, version: int, stats: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        self._check_lease()  # a trainer that lost its lease must not write model/<v>
        weights = state_to_bytes(self.policy)
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        manifest = {**self.manifest_base, **(extra or {}), "training_stats": stats}
        self.retrying("publishing model", self.store.publish_version, version, weights, manifest,
                       buffer.getvalue())
        self.published = version
        if self.files.settings.schedule == "sync" and version < self.max_iterations:
            # Before the announcement, so workers that see the version find its tickets open.
            self.retrying("opening tickets", self.transport.open_tickets, version, self.episodes_per_iteration)
        self.retrying("announcing version", self.transport.announce_version, version)
        self._prune(version)

    def _prune(self, latest: int) -> None:
        """Bounded disk: keep the last versions, the best and the pinned ones (after the pointer moved on)."""
        keep = set(self.config.pinned_versions)
        best = self._best_version()
        if best is not None:
            keep.add(best)
        pruned = self.retrying("pruning old versions", self.store.prune_versions, latest,
                               self.config.keep_versions, keep)
        if pruned:
            log.info("pruned model versions %s (keeping the last %d, best %s, pinned %s)", pruned,
                     self.config.keep_versions, best, sorted(self.config.pinned_versions) or "none")

    def _best_version(self) -> int | None:
        return self.checkpoints.best_version

    # ------------------------------------------------------------------ evaluation

    def _credit_evaluations(self, force: bool = False) -> None:
        """Credit worker 0's evaluation of each version, in order, to that version — the one that
        drove the episodes — in model/deepracer_checkpoints.json (best by BEST_MODEL_METRIC, and the
        last), the progress hash and the log (deepracer-formats.md §4.2)."""
        now = time.monotonic()
        if not force and now - self.last_evaluation_poll < EVALUATION_POLL_S:
            return
        self.last_evaluation_poll = now
        reports = self.retrying("reading evaluations", self.transport.evaluations)
        metric = self.files.settings.best_model_metric
        for version in sorted(v for v in reports if v > self.checkpoints.last_version):
            source = f"evaluation of model version {version} (Redis {self.transport.keys.evaluations})"
            try:
                episodes = episodes_from_json(reports[version], source)
            except EvaluationError as e:
                log.warning("%s", e)
                self.retrying("reporting", self.transport.report_error, "trainer", str(e))
                continue
            value = eval_metric(episodes, metric)
            is_best = self.checkpoints.credit(version, value, time.time())
            self.evaluator_silent = False
            self.retrying("writing checkpoint index", self.store.put_text, CHECKPOINTS_INDEX,
                           self.checkpoints.to_json())
            laps = sum(e.progress >= 100.0 for e in episodes)
            best_value = float(self.checkpoints.best["avg_eval_metric"]) if self.checkpoints.best else value
            self.retrying("writing progress", self.transport.set_progress, {
                "eval_version": version, "eval_trials": len(episodes),
                "eval_progress": round(eval_metric(episodes, "progress"), 3), "eval_laps": laps,
                "eval_metric": round(value, 5), "best_version": self.checkpoints.best_version,
                "best_metric": round(best_value, 5),
            })
            log.info("evaluation of model version %d: %d trial(s), progress %.1f%%, %d lap(s), %s %.6g; "
                     "best version %s (%s %.6g)%s", version, len(episodes), eval_metric(episodes, "progress"),
                     laps, metric, value, self.checkpoints.best_version, metric, best_value,
                     " (new best)" if is_best else "")

    def _await_evaluation(self, version: int) -> None:
        """Wait until worker 0's evaluation of ``version`` is credited, at most HOTLAP_STALL_TIMEOUT_S.

        DeepRacer's worker 0 evaluates each checkpoint before it polls for the next, and its trainer
        needs worker 0's share of every iteration, so every checkpoint gets evaluated. hotlap's
        tickets go to whichever worker asks first, so the trainer holds the next version back
        instead (worker 0 evaluates while the trainer trains: the wait is usually nil). A worker 0
        that does not answer in time is not waited for again until an evaluation arrives."""
        if self.files.settings.min_eval_trials == 0:
            return
        self._credit_evaluations(force=True)
        deadline = time.monotonic() + self.config.stall_timeout_s
        while self.checkpoints.last_version < version and not self.evaluator_silent:
            if self.stop_requested:
                # The update is trained: publishing it keeps the work (a stopped worker 0 will not
                # evaluate now); only this version's evaluation goes missing.
                log.info("stop requested: publishing without waiting for model version %d's evaluation", version)
                return
            self.check_run_not_failed()
            self._beat("awaiting evaluation", version)
            if time.monotonic() > deadline:
                log.warning("no evaluation of model version %d from worker 0 after %.0fs; going on without it",
                            version, self.config.stall_timeout_s)
                self.evaluator_silent = True
                return
            time.sleep(EVALUATION_POLL_S / 4)
            self._credit_evaluations(force=True)

    def _acknowledge(self, batch: Batch) -> None:
        self.retrying("acking", self.transport.acknowledge, batch.entry_ids)
        self._write_accounting()

    def _write_accounting(self) -> None:
        """logs/accounting.json: the run's counters so far (after every iteration, so that a session
        stopped or killed hands them to the next one, see _carry_accounting)."""
        counts = self.retrying("reading accounting", self.transport.accounting)
        self.retrying("writing accounting", self.store.put_text, ACCOUNTING_LOG, self._accounting_json(counts))

    def _accounting_json(self, counts: dict[str, int]) -> str:
        return json.dumps({"run_id": self.config.run_id, **counts}, indent=2)

    def _carry_accounting(self) -> None:
        """A resumed run on a fresh Redis (`hotlap train` starts one per session) would count only this
        session: add the counters of logs/accounting.json once. Messages the earlier session had in
        the stream went with its Redis: they count as dropped stale, so produced = consumed + dropped."""
        earlier = dict.fromkeys(ACCOUNTING_FIELDS, 0)
        try:
            text = self.retrying("reading accounting", self.store.get_text, ACCOUNTING_LOG)
            earlier = {name: int(json.loads(text).get(name, 0)) for name in ACCOUNTING_FIELDS}
        except ObjectNotFound:
            pass  # a new run, or a session that never finished an iteration: nothing to add
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): this session's accounting starts from 0", ACCOUNTING_LOG, e)
        # Carried even when there is nothing to add: the mark tells a restarted trainer on this same
        # Redis that its counters already count from the run's start.
        vanished = earlier["produced"] - earlier["consumed"] - sum(
            earlier[f"dropped_{reason}"] for reason in DROP_REASONS)
        earlier["dropped_stale"] += max(vanished, 0)
        if self.retrying("carrying accounting", self.transport.carry_accounting, earlier) and earlier["produced"]:
            log.info("accounting continues from %s: %d produced, %d consumed (%d in the earlier session's "
                     "stream were lost with its Redis: counted as dropped stale)", ACCOUNTING_LOG,
                     earlier["produced"], earlier["consumed"], max(vanished, 0))

    def _log_iteration(self, version: int, batch: Batch, stats: dict[str, float]) -> None:
        if self.tensorboard is not None:
            # steps consumed before this iteration (chunks included), as rl_coach's Total steps
            self.tensorboard.log_iteration(self.coach.total_steps, batch.episodes, stats)
        for e in batch.whole_episodes:  # one row per episode: a chunk's episode gets its row when it ends
            self.episode_rows.append((version, e.model_version, e.worker_name, e.worker_index, e.episode,
                                      e.episode_steps, round(e.episode_reward, 4), round(e.progress, 4), e.status))
        self.retrying("writing episode log", self.store.put_text, EPISODE_LOG, episode_log_csv(self.episode_rows))
        self.coach.add_iteration(version, batch.episodes)
        self.retrying("writing rl_coach episode log", self.store.put_text, COACH_EPISODE_LOG, self.coach.csv())
        progress = {
            "iteration": version + 1, "max_iterations": self.max_iterations,
            "episodes": len(self.episode_rows), "chunks": batch.num_chunks, "steps": batch.num_steps,
            **{f"dropped_{reason}": count for reason, count in batch.dropped.items()},
            **{k: round(v, 5) for k, v in stats.items()},
        }
        self.retrying("writing progress", self.transport.set_progress, progress)
        log.info("iteration %d/%d: %d episodes (+%d chunks), %d steps, reward %.2f, progress %.1f%%, laps %d, "
                 "policy loss %.4f, value loss %.4f, entropy %.3f, %s, collected in %.1fs, trained in %.1fs",
                 version + 1, self.max_iterations, batch.num_episodes, batch.num_chunks, batch.num_steps,
                 stats["mean_reward"],
                 stats["mean_progress"], stats["laps_completed"], stats.get("policy_loss", 0.0),
                 stats.get("value_loss", 0.0), stats.get("entropy", 0.0), kl_summary(stats, self.settings),
                 stats.get("collect_seconds", 0.0), stats["train_seconds"])

    def _finish(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        self._check_lease()
        self.retrying("writing ip/done", self.store.mark_done)
        self.retrying("setting status", self.transport.set_status, "done")
        self._close_accounting()
        log.info("run %s done: model version %d in %s", self.config.run_id, self.max_iterations, self.store.url)

    def _close_accounting(self) -> None:
        """The run is over (done or failed), so workers can push nothing more: drop what is left in
        the stream as stale and write the counters to logs/accounting.json."""
        if not hasattr(self, "spec"):  # set-up never finished: this trainer never read the stream
            return
        try:
            left = self.transport.drop_remaining("stale")
            counts = self.transport.accounting()
            self.store.put_text(ACCOUNTING_LOG, self._accounting_json(counts))
        except (TransportError, StoreError) as e:
            log.warning("could not write %s: %s", ACCOUNTING_LOG, e)
            return
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
        log.info("accounting: %d produced = %d consumed + %d dropped (%s; %d left at the end), %d re-issued; "
                 "%d of the produced were chunks of running episodes (%d consumed, %d dropped)",
                 counts["produced"], counts["consumed"], dropped,
                 ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in counts.items() if k.startswith("dropped_")),
                 left, counts["reissued"], counts["chunks_produced"], counts["chunks_consumed"],
                 counts["chunks_dropped"])
