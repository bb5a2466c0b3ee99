"""`hotlap health --role ROLE`: is a hotlap process healthy, judged from what it publishes.

For container probes (infra/k8s/): exit 0 when healthy, 1 when not, with one line saying why.
It reads the same HOTLAP_* environment as the process it checks, so it runs in that container.

The run's Redis keys carry its identity (the nonce the seed wrote into the store, see
docs/architecture.md "Runs and their identity"), so the trainer and simulator checks read it from
the store first: an unseeded store is unhealthy for them.

- `trainer`: its heartbeat (`hotlap:{run}:{nonce}:trainer`, beaten between steps, TTL
  `TRAINER_HEARTBEAT_TTL_S`) is in Redis.
- `simulator`: the heartbeat of HOTLAP_WORKER_NAME (`hotlap:{run}:workers:{name}`, beaten every
  HOTLAP_HEARTBEAT_S, TTL `HEARTBEAT_TTL_S`) is in Redis; a worker still waiting for the trainer's
  first version does not beat yet, and counts as healthy.
- `seed`: the store holds the run's files and they validate (what the trainer loads first).

For either service, a run that is `done` or `failed` counts as healthy: the process is on its way
out by itself, and restarting it would only repeat that.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ConfigError, ServiceConfig, WorkerConfig
from shared.run_files import load_run_files, read_run_nonce
from shared.store import ModelStore, ObjectNotFound, StoreError, open_store
from shared.transport import RunTransport, TransportError

ROLES = ("trainer", "simulator", "seed")


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str


def _beat_age(beat: dict[str, str]) -> str:
    try:
        return f"{time.time() - float(beat['last_heartbeat']):.0f}s ago"
    except (KeyError, ValueError):
        return "at an unknown time"


def check_service(role: str, transport: RunTransport, worker_name: str | None = None) -> Health:
    """The trainer's or one worker's health from its heartbeat and the run status.

    Raises TransportError when Redis cannot be read (unhealthy too: the process cannot work).
    """
    state, version = transport.run_state()
    if state is not None and state.finished:
        return Health(True, f"run {state.state}: the {role} exits by itself")
    if role == "trainer":
        beat = transport.trainer_heartbeat()
        if beat is None:
            return Health(False, "no trainer heartbeat in Redis (never beat, or none for longer than its TTL)")
        return Health(True, f"trainer {beat.get('step', '?')} version {beat.get('version', '?')}, "
                            f"heartbeat {_beat_age(beat)}")
    if worker_name is None:
        raise ValueError("a simulator check needs the worker's name")
    if version is None or state is None or state.state != "running":
        return Health(True, f"worker {worker_name} waiting for the trainer's first version")
    beat = transport.worker_heartbeat(worker_name)
    if beat is None:
        return Health(False, f"no heartbeat of worker {worker_name} in Redis for longer than its TTL")
    return Health(True, f"worker {worker_name} on version {beat.get('version', '?')}, "
                        f"{beat.get('steps_per_s', '?')} steps/s, heartbeat {_beat_age(beat)}")


def check_seed(store: ModelStore) -> Health:
    """Whether the run's files are in the store and valid (StoreError: the store is unreachable)."""
    try:
        files = load_run_files(store)
    except ObjectNotFound as e:
        return Health(False, f"not seeded yet ({e})")
    except ConfigError as e:
        return Health(False, str(e))
    return Health(True, f"run files in {store.url}: track {files.settings.track}, "
                        f"{files.settings.max_iterations} iterations")


def check(role: str, environ: Mapping[str, str]) -> Health:
    """Check `role` with the HOTLAP_* variables of `environ` (raises ConfigError when incomplete)."""
    config = ServiceConfig.from_env(environ)
    store = ModelStore(open_store(config.store_url, config.s3_endpoint_url))
    if role == "seed":
        try:
            return check_seed(store)
        except StoreError as e:
            return Health(False, f"store unreadable: {e}")
    worker_name = None
    if role == "simulator":
        # The worker's default name (host-pid) differs in every process: the probe must be told it.
        if not environ.get("HOTLAP_WORKER_NAME"):
            raise ConfigError("environment (HOTLAP_* variables)", [
                "HOTLAP_WORKER_NAME: must be set (e.g. to the pod name) for the simulator's health check"])
        worker_name = WorkerConfig.from_env(environ).worker_name
    try:
        nonce = read_run_nonce(store)
    except ConfigError as e:
        return Health(False, f"run not seeded: {e}")
    except StoreError as e:
        return Health(False, f"store unreadable: {e}")
    try:
        return check_service(role, RunTransport.from_url(config.redis_url, config.run_id, nonce=nonce), worker_name)
    except TransportError as e:
        return Health(False, str(e))
