"""Every Redis key of a run, from one place.

Keys are namespaced `hotlap:{run}:{nonce}:...`: the run id the user picked, plus the run nonce
the seed wrote into the store (`ip/run.json`). A new run on the same Redis with the same run id
(a new model prefix, or a prefix re-seeded with --overwrite) gets a new nonce and so keys no
earlier run ever touched: no inherited status, tickets, worker indexes or stream.
"""

from __future__ import annotations

from dataclasses import dataclass

# Characters SCAN MATCH treats as glob syntax; a run id given by a user is matched literally.
_GLOB_SPECIAL = "*?[]\\"


@dataclass(frozen=True)
class RunKeys:
    run_id: str
    nonce: str = ""  # empty: keys without a run identity (probes, tests of the transport alone)

    @property
    def prefix(self) -> str:
        return f"hotlap:{self.run_id}:{self.nonce}" if self.nonce else f"hotlap:{self.run_id}"

    @property
    def pattern(self) -> str:
        """Every key of this run (SCAN MATCH), e.g. to set their expiry once the run ended."""
        return f"{self.prefix}:*"

    @classmethod
    def every_identity_status(cls, run_id: str) -> str:
        """SCAN MATCH pattern for the status hash of every identity (nonce) of `run_id` in Redis:
        how `hotlap status RUN` finds a run's nonce without its store."""
        literal = "".join(f"\\{c}" if c in _GLOB_SPECIAL else c for c in run_id)
        return cls(literal, "*").status

    @classmethod
    def identity_in(cls, run_id: str, key: str) -> str | None:
        """The nonce in `key` when it is the status hash of one of `run_id`'s identities, else None."""
        head, _, tail = cls(run_id, "\0").status.partition("\0")
        if not (key.startswith(head) and key.endswith(tail)) or len(key) <= len(head) + len(tail):
            return None
        nonce = key[len(head):len(key) - len(tail)]
        return nonce if nonce.isascii() and nonce.isalnum() else None

    @property
    def experience(self) -> str:
        """Stream of experience messages, read by the trainer's consumer group."""
        return f"{self.prefix}:experience"

    @property
    def experience_bytes(self) -> str:
        """Payload bytes in the experience stream not yet acknowledged (the stream's byte bound)."""
        return f"{self.prefix}:experience_bytes"

    @property
    def model(self) -> str:
        """Latest published model version (integer); also the pub/sub channel announcing it."""
        return f"{self.prefix}:model"

    @property
    def status(self) -> str:
        """Hash: state (starting|running|done|failed), reason, updated_at."""
        return f"{self.prefix}:status"

    @property
    def progress(self) -> str:
        """Hash the trainer keeps current: iteration, episodes, mean reward/progress, last losses."""
        return f"{self.prefix}:progress"

    @property
    def worker_indexes(self) -> str:
        """Hash worker name -> index, so a reconnecting worker keeps its index."""
        return f"{self.prefix}:worker_index"

    def worker_log(self, index: int) -> str:
        """Hash {episodes, iteration} of worker index `index`: its next episode number and simtrace
        iteration, so the worker holding the index next continues its files instead of overwriting them."""
        return f"{self.prefix}:worker_log:{index}"

    def worker(self, worker_name: str) -> str:
        """Heartbeat hash of one worker, with a TTL: version in use, episodes, steps/s."""
        return f"{self.prefix}:workers:{worker_name}"

    @property
    def trainer(self) -> str:
        """Heartbeat hash of the run's trainer, with a TTL: version, iteration, step (container probes)."""
        return f"{self.prefix}:trainer"

    @property
    def worker_pattern(self) -> str:
        return f"{self.prefix}:workers:*"

    def tickets(self, version: int) -> str:
        """Hash {quota, claimed}: episodes still to be played with `version` (sync schedule)."""
        return f"{self.prefix}:tickets:{version}"

    @property
    def trainer_lease(self) -> str:
        """String "host=... pid=... token=..." with a TTL: the one trainer allowed to train this run."""
        return f"{self.prefix}:trainer_lease"

    @property
    def accounting(self) -> str:
        """Hash of counters: produced (workers), consumed (trainer), dropped_<reason>, reissued."""
        return f"{self.prefix}:accounting"

    @property
    def evaluations(self) -> str:
        """Hash version -> JSON list of the evaluation episodes worker 0 drove with that version."""
        return f"{self.prefix}:evaluations"

    @property
    def errors(self) -> str:
        """List of recent error reports (reward function errors, corrupt messages) for the user."""
        return f"{self.prefix}:errors"
