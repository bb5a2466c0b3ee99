"""A thin Redis layer: the experience stream, model-version announcements, run status,
episode tickets and worker heartbeats of one run.

The client is built from a URL with deliberate timeouts; every key comes from `RunKeys`.
Every Redis failure surfaces as one `TransportError` naming the server (password redacted) and
saying whether it is transient (connection refused/reset, timeouts, LOADING, BUSY: worth a retry,
see `shared.service.ServiceLoop.retrying`) or permanent (NOAUTH/WRONGPASS, WRONGTYPE, NOGROUP,
OOM, ...: retrying cannot fix it, the run fails with that one line).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.config import STREAM_MAX_BYTES
from shared.experience import MAX_PAYLOAD_BYTES, Experience, MessageError
from shared.keys import RunKeys

log = logging.getLogger(__name__)

TRAINER_GROUP = "trainer"
# What `push_experience` answers when the stream has no room for the message (an XADD id never looks so).
STREAM_FULL = b"full"
# Blocking reads wait at most this long, well inside the socket timeout.
READ_BLOCK_MS = 1000
SOCKET_TIMEOUT_S = 10.0
HEARTBEAT_TTL_S = 15
# The trainer beats between steps, not inside a PPO update: the TTL must outlast the longest
# update (minutes on a CPU for a full 10000-step batch), or a probe would kill a busy trainer.
TRAINER_HEARTBEAT_TTL_S = 600

RUN_STATES = ("starting", "running", "done", "failed")
FINISHED_STATES = ("done", "failed")
# Why the trainer dropped a message: played with a version it no longer trains (stale), not
# decodable (corrupt), bigger than the run allows (oversize), decodable but not this run's
# observation/action spec (invalid), or past DeepRacer's per-iteration step cap (over_cap).
# Each is a counter `dropped_<reason>` in the accounting hash.
DROP_REASONS = ("stale", "corrupt", "oversize", "invalid", "over_cap")
# produced = consumed + dropped counts messages: whole episodes and (async) chunks of running
# episodes alike. The chunks_* counters say how many of them were chunks, so whole episodes
# produced = produced - chunks_produced (and chunks_produced = chunks_consumed + chunks_dropped).
ACCOUNTING_FIELDS = ("produced", "consumed", *(f"dropped_{r}" for r in DROP_REASONS), "reissued",
                     "chunks_produced", "chunks_consumed", "chunks_dropped")
ACK_OUTCOMES = ("consumed", *(f"dropped_{r}" for r in DROP_REASONS))
# Set in the accounting hash once an earlier session's counters were added (carry_accounting).
ACCOUNTING_CARRIED = "carried"


# Error replies that say "not now" rather than "never": the server is loading its data set,
# busy running a script, or (replicas) has lost its primary. Every other error reply is permanent.
TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN")


class TransportError(RuntimeError):
    """Redis could not be reached or answered with an error; the message names the server.

    `transient` is True when waiting may help (connection refused/reset, timeouts, LOADING, BUSY).
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def redis_from_url(url: str, socket_timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A client with timeouts set: a dead server fails fast instead of hanging a worker.

    A password in the URL (`redis://:PASSWORD@host:6379/0`, percent-encoded if it holds
    `@ : /`) is sent with AUTH; it never appears in hotlap's messages (`shared.config.redact_url`).

    redis-py retries once at once on a fresh connection (a pooled connection the server closed
    while idle); waiting out an outage is the caller's policy (`ServiceLoop.retrying`), not two
    nested retry loops.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )


def describe_client(client: Any) -> str:
    """The server a client talks to, as a URL with the user-info replaced by `***` (it goes into logs)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    auth = "***@" if kwargs.get("password") or kwargs.get("username") else ""  # as shared.config.redact_url
    if "path" in kwargs:
        return f"unix://{auth}{kwargs['path']}"
    return f"redis://{auth}{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def is_transient(error: redis.exceptions.RedisError) -> bool:
    """Worth retrying? Authentication and permission errors are ConnectionErrors to redis-py, but
    permanent; LOADING is a ConnectionError too, and transient."""
    if isinstance(error, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return False
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(error, redis.exceptions.ResponseError):
        return str(error).split(" ", 1)[0] in TRANSIENT_REPLIES
    return False


@dataclass(frozen=True)
class RunStatus:
    state: str
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass
class Delivery:
    """One stream entry as read by the trainer: the decoded experience, or why it was unreadable."""

    entry_id: bytes
    experience: Experience | None
    error: str | None = None
    reason: str = ""  # "corrupt" or "oversize" when experience is None


def _wrap_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every redis-py error of a RunTransport method into one classified TransportError."""

    @functools.wraps(func)
    def wrapper(self: RunTransport, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except redis.exceptions.RedisError as e:
            transient = is_transient(e)
            if transient and isinstance(e, redis.exceptions.TimeoutError):
                what = "timed out"
            elif transient and isinstance(e, redis.exceptions.ConnectionError):
                what = "unreachable"
            else:
                what = "refused"
            raise TransportError(f"Redis at {self.url} {what}: {type(e).__name__}: {e}", transient) from e

    return wrapper


# Hand out again the tickets of a version that were claimed but whose episodes never arrived,
# and count them as re-issued.
_REISSUE_TICKETS = """
local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '0')
local received = tonumber(ARGV[1])
if claimed <= received then return 0 end
redis.call('HSET', KEYS[1], 'claimed', received)
redis.call('HINCRBY', KEYS[2], 'reissued', claimed - received)
return claimed - received
"""

# Claim one episode ticket of a version: -1 while the trainer has not opened the version,
# 0 when its quota is used up, else the ticket number.
_CLAIM_TICKET = """
local quota = tonumber(redis.call('HGET', KEYS[1], 'quota') or '-1')
if quota < 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'claimed', 1)
if n > quota then
  redis.call('HINCRBY', KEYS[1], 'claimed', -1)
  return 0
end
return n
"""

# Set the run status unless the run already ended: done and failed are final, so no process
# (a restarted trainer, a late worker) can set a failed run back to running or bury its reason.
# Returns the state in effect afterwards.
_SET_STATUS = """
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'done' or current == 'failed' then return current end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'updated_at', ARGV[3])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return ARGV[1]
"""

# The trainer lease: renew (PEXPIRE) or release (DEL) only while this holder still holds it.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Whether a stream entry is a chunk of a running episode (async schedule, shared.experience.FINAL_CHUNK):
# its header's extra.final_chunk is false. Read from the entry itself, by the script that adds it
# and by the one that acknowledges it, so chunks_produced = chunks_consumed + chunks_dropped exactly.
# A header that does not parse, or is too big to be honest, is no chunk (it will be dropped as corrupt).
_IS_CHUNK = """
local function is_chunk(fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'header' then
      if string.len(fields[i + 1]) > 65536 then return false end
      local ok, header = pcall(cjson.decode, fields[i + 1])
      return ok and type(header) == 'table' and type(header.extra) == 'table' and header.extra.final_chunk == false
    end
  end
  return false
end
"""

# Append one experience message and count it as produced, in one server-side step, if the run is
# not over and the stream has room for it. Once the status says done/failed nothing more enters the
# stream, so what is in it at the end is exactly what the trainer still has to account for. The
# bound is checked and applied in the same step so that N workers adding at once cannot overshoot
# it (a length check before XADD lets each of them through: bench/scale.py --bound count).
# KEYS: stream, byte counter, status, accounting. ARGV: bound in bytes, then field/value pairs.
# A message's size is the sum of its fields' and values' lengths, as _ACK_AND_DELETE subtracts it.
# An empty stream takes any one message, so a message larger than the bound cannot wait forever.
# Returns the entry id; 0 when the run is over; false (nil) when the message does not fit.
_PUSH_EXPERIENCE = _IS_CHUNK + """
local state = redis.call('HGET', KEYS[3], 'state')
if state == 'done' or state == 'failed' then return 0 end
local size = 0
for i = 2, #ARGV do size = size + string.len(ARGV[i]) end
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > 0 and held + size > tonumber(ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('INCRBY', KEYS[2], size)
redis.call('HINCRBY', KEYS[4], 'produced', 1)
if is_chunk({unpack(ARGV, 2)}) then redis.call('HINCRBY', KEYS[4], 'chunks_produced', 1) end
return id
"""

# Acknowledge and delete entries, taking their sizes off the byte counter and counting them under
# an outcome (and the chunks among them under a chunk field), in one step (a trainer that dies in
# between never counts an entry twice; an entry neither pending nor present counts nothing).
# KEYS: stream, byte counter, accounting. ARGV: group, outcome field, chunk field, then entry ids.
_ACK_AND_DELETE = _IS_CHUNK + """
local freed, counted, chunks = 0, 0, 0
for i = 4, #ARGV do
  local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  local size = 0
  if entry then
    for _, part in ipairs(entry[2]) do size = size + string.len(part) end
  end
  local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  local deleted = redis.call('XDEL', KEYS[1], ARGV[i])
  freed = freed + size * deleted
  if acked + deleted > 0 then
    counted = counted + 1
    if entry and is_chunk(entry[2]) then chunks = chunks + 1 end
  end
end
if freed > 0 then
  local left = redis.call('DECRBY', KEYS[2], freed)
  if left < 0 then redis.call('SET', KEYS[2], 0) end
end
if counted > 0 then redis.call('HINCRBY', KEYS[3], ARGV[2], counted) end
if chunks > 0 then redis.call('HINCRBY', KEYS[3], ARGV[3], chunks) end
return counted
"""


# Give back tickets, unless the version is closed (that would re-create its hash). KEYS[1]: the tickets hash.
_RELEASE_TICKETS = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'claimed', -tonumber(ARGV[1])) end
"""


class RunTransport:
    """Everything one run exchanges over Redis.

    `stream_max_bytes`: the bound on the experience stream's payload bytes (messages added and
    not yet acknowledged), enforced atomically across every producer by `push_experience`.
    """

    def __init__(self, client: redis.Redis, run_id: str, *, stream_max_bytes: int = STREAM_MAX_BYTES,
                 nonce: str = "", finished_ttl_s: int | None = None):
        """`nonce`: the run identity from the store (shared.run_files.read_run_nonce), part of every
        key. `finished_ttl_s`: once the run is done or failed, its keys expire after this many
        seconds (None: never)."""
        # redis-py's stubs type replies as bytes | str | Any; replies here are bytes (decode_responses off).
        self.client: Any = client
        self.url = describe_client(client)  # for messages; never holds the password
        self.run_id = run_id
        self.keys = RunKeys(run_id, nonce)
        self.stream_max_bytes = stream_max_bytes
        self.finished_ttl_s = finished_ttl_s
        self._claim_ticket = client.register_script(_CLAIM_TICKET)
        self._set_status = client.register_script(_SET_STATUS)
        self._renew_lease = client.register_script(_RENEW_LEASE)
        self._release_lease = client.register_script(_RELEASE_LEASE)
        self._push = client.register_script(_PUSH_EXPERIENCE)
        self._reissue = client.register_script(_REISSUE_TICKETS)
        self._ack_and_delete = client.register_script(_ACK_AND_DELETE)
        self._release_tickets = client.register_script(_RELEASE_TICKETS)

    @classmethod
    def from_url(cls, url: str, run_id: str, *, stream_max_bytes: int = STREAM_MAX_BYTES, nonce: str = "",
                 finished_ttl_s: int | None = None) -> RunTransport:
        return cls(redis_from_url(url), run_id, stream_max_bytes=stream_max_bytes, nonce=nonce,
                   finished_ttl_s=finished_ttl_s)

    def for_run(self, nonce: str) -> RunTransport:
        """The same connection, keyed by the run identity read from the store."""
        return RunTransport(self.client, self.run_id, stream_max_bytes=self.stream_max_bytes, nonce=nonce,
                            finished_ttl_s=self.finished_ttl_s)

    @_wrap_errors
    def ping(self) -> bool:
        return bool(self.client.ping())

    # ------------------------------------------------------------ experience stream

    @_wrap_errors
    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.experience, TRAINER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    @_wrap_errors
    def backlog(self) -> int:
        return int(self.client.xlen(self.keys.experience))

    @_wrap_errors
    def stream_bytes(self) -> int:
        """Payload bytes in the stream not yet acknowledged (what `stream_max_bytes` bounds)."""
        return int(self.client.get(self.keys.experience_bytes) or 0)

    def push_experience(self, experience: Experience) -> bytes | None:
        """Append one message and count it as produced, if the stream has room for it under
        `stream_max_bytes` (one atomic check-and-add across every producer). Returns the entry id;
        `STREAM_FULL` when there is no room (the caller waits and tries again: the stream is never
        trimmed, that would lose work); None when the run is already over (done or failed), so
        nothing enters the stream after the trainer's final accounting."""
        return self.push_fields(experience.encode())

    @_wrap_errors
    def push_fields(self, fields: dict[bytes, bytes]) -> bytes | None:
        """`push_experience` for an already encoded message (benchmarks send pre-encoded ones)."""
        args: list[Any] = [self.stream_max_bytes]
        for name, value in fields.items():
            args += [name, value]
        reply = self._push(keys=[self.keys.experience, self.keys.experience_bytes, self.keys.status,
                                 self.keys.accounting], args=args)
        if reply == 0:
            return None
        return STREAM_FULL if reply is None else bytes(reply)

    @_wrap_errors
    def read_experience(self, consumer: str, count: int, block_ms: int = READ_BLOCK_MS,
                        pending_after: bytes | None = None,
                        max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> list[Delivery]:
        """Read new entries; or, with `pending_after` set, this consumer's delivered-but-unacked
        entries with ids after it (b"0" for all), which is how a restarted trainer resumes.
        A message bigger than `max_payload_bytes` comes back undecoded, with reason "oversize"."""
        start = ">" if pending_after is None else pending_after
        pending = pending_after is not None
        reply = self.client.xreadgroup(
            TRAINER_GROUP, consumer, {self.keys.experience: start}, count=count,
            block=None if pending else block_ms,
        )
        deliveries = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                deliveries.append(self._decode(entry_id, fields, max_payload_bytes))
        return deliveries

    @staticmethod
    def _decode(entry_id: bytes, fields: dict[bytes, bytes] | None, max_payload_bytes: int) -> Delivery:
        if not fields:  # pending entry whose data was deleted
            return Delivery(entry_id, None, "entry has no fields (deleted)", "corrupt")
        try:
            return Delivery(entry_id, Experience.decode(fields, max_payload_bytes))
        except MessageError as e:
            return Delivery(entry_id, None, str(e), e.reason)

    @_wrap_errors
    def acknowledge(self, entry_ids: list[bytes], outcome: str = "consumed") -> None:
        """Ack and delete, and count the entries under `outcome` ("consumed" or "dropped_<reason>")
        in the same transaction, so a trainer that dies in between never counts an entry twice.
        Deleting matters too: consumed experience must not pile up in Redis memory."""
        if outcome not in ACK_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r} (one of {', '.join(ACK_OUTCOMES)})")
        if not entry_ids:
            return
        chunk_field = "chunks_consumed" if outcome == "consumed" else "chunks_dropped"
        self._ack_and_delete(keys=[self.keys.experience, self.keys.experience_bytes, self.keys.accounting],
                             args=[TRAINER_GROUP, outcome, chunk_field, *entry_ids])

    @_wrap_errors
    def drop_remaining(self, reason: str = "stale", batch: int = 500) -> int:
        """Drop (ack, delete, count as `dropped_<reason>`) every entry left in the stream, delivered
        or not. Called once the run is over, when `push_experience` accepts nothing more."""
        dropped = 0
        while True:
            entries = self.client.xrange(self.keys.experience, count=batch)
            if not entries:
                return dropped
            self.acknowledge([entry_id for entry_id, _ in entries], f"dropped_{reason}")
            dropped += len(entries)

    @_wrap_errors
    def carry_accounting(self, earlier: Mapping[str, int]) -> bool:
        """Add an earlier session's counters (logs/accounting.json) once to this Redis' counters, so a
        run resumed on a fresh Redis (`hotlap train` starts one per session) counts the whole run.
        False when this Redis already counts from the run's start (a `carried` mark: it was done
        before, or the counters survived with the server), and nothing is added."""

        def carry(pipe: Any) -> bool:
            if pipe.hexists(self.keys.accounting, ACCOUNTING_CARRIED):
                return False
            pipe.multi()
            for name in ACCOUNTING_FIELDS:
                if earlier.get(name):
                    pipe.hincrby(self.keys.accounting, name, int(earlier[name]))
            pipe.hset(self.keys.accounting, ACCOUNTING_CARRIED, 1)
            return True

        carried: bool = self.client.transaction(carry, self.keys.accounting, value_from_callable=True)
        return carried

    @_wrap_errors
    def accounting(self) -> dict[str, int]:
        """The run's counters (every field of ACCOUNTING_FIELDS, 0 when never incremented)."""
        raw = self.client.hgetall(self.keys.accounting)
        counts = {k.decode(): int(v) for k, v in raw.items()}
        return {name: counts.get(name, 0) for name in ACCOUNTING_FIELDS}

    # ------------------------------------------------------------ model versions

    @_wrap_errors
    def announce_version(self, version: int) -> None:
        pipe = self.client.pipeline()
        pipe.set(self.keys.model, version)
        pipe.publish(self.keys.model, version)
        pipe.execute()

    @_wrap_errors
    def latest_version(self) -> int | None:
        value = self.client.get(self.keys.model)
        return None if value is None else int(value)

    # ------------------------------------------------------------ tickets (sync schedule)

    @_wrap_errors
    def open_tickets(self, version: int, quota: int) -> None:
        """Let workers play `quota` episodes with `version` (keeps `claimed` if already open)."""
        self.client.hset(self.keys.tickets(version), "quota", quota)
        self.client.hsetnx(self.keys.tickets(version), "claimed", 0)

    @_wrap_errors
    def reissue_tickets(self, version: int, received: int) -> int:
        """Hand out again the tickets of episodes that never arrived (their worker died);
        returns how many, which the accounting counts as re-issued (none once the version is closed)."""
        return int(self._reissue(keys=[self.keys.tickets(version), self.keys.accounting], args=[received]))

    @_wrap_errors
    def claim_ticket(self, version: int) -> int:
        return int(self._claim_ticket(keys=[self.keys.tickets(version)]))

    @_wrap_errors
    def release_tickets(self, version: int, count: int) -> None:
        """Give back tickets of episodes a stopping worker will not finish (none once the version is closed)."""
        if count > 0:
            self._release_tickets(keys=[self.keys.tickets(version)], args=[count])

    @_wrap_errors
    def close_tickets(self, version: int) -> None:
        """The trainer moved on from `version`: no worker can claim one of its tickets any more
        (`claim_ticket` answers -1), so none plays a guaranteed-stale episode."""
        self.client.delete(self.keys.tickets(version))

    # ------------------------------------------------------------ run status and progress

    @_wrap_errors
    def set_status(self, state: str, reason: str = "") -> str:
        """Set the run state, unless the run already ended (done and failed are final).
        Returns the state in effect afterwards; a finished run's keys get `finished_ttl_s`."""
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        effective = self._set_status(keys=[self.keys.status], args=[state, reason, time.time()])
        effective = effective.decode() if isinstance(effective, bytes) else str(effective)
        if effective in FINISHED_STATES and self.finished_ttl_s is not None:
            self._expire_run(self.finished_ttl_s)
        return effective

    def _expire_run(self, ttl_s: int) -> None:
        """Every key of this run expires in ttl_s (a finished run's state is kept that long for
        `hotlap train`, late workers and the user, then Redis forgets it)."""
        if not self.keys.nonce:
            return  # without a run identity the pattern would match other runs' keys
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.keys.pattern, count=500):
            pipe.expire(key, ttl_s)
        pipe.execute()

    @_wrap_errors
    def status(self) -> RunStatus | None:
        data = self.client.hgetall(self.keys.status)
        if not data:
            return None
        return RunStatus(data[b"state"].decode(), data.get(b"reason", b"").decode())

    @_wrap_errors
    def run_state(self) -> tuple[RunStatus | None, int | None]:
        """Status and latest version in one round trip (what a worker checks every loop)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.status)
        pipe.get(self.keys.model)
        status, version = pipe.execute()
        parsed = RunStatus(status[b"state"].decode(), status.get(b"reason", b"").decode()) if status else None
        return parsed, None if version is None else int(version)

    @_wrap_errors
    def set_progress(self, fields: dict[str, Any]) -> None:
        self.client.hset(self.keys.progress, mapping={k: str(v) for k, v in fields.items()})

    @_wrap_errors
    def progress(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.keys.progress).items()}

    # ------------------------------------------------------------ evaluation (worker 0 -> trainer)

    @_wrap_errors
    def report_evaluation(self, version: int, episodes_json: str) -> None:
        """Worker 0's evaluation episodes of ``version`` (a JSON list, shared.evaluation)."""
        self.client.hset(self.keys.evaluations, str(version), episodes_json)

    @_wrap_errors
    def evaluations(self) -> dict[int, str]:
        """Every reported evaluation: version -> the JSON list of its episodes."""
        return {int(k): v.decode() for k, v in self.client.hgetall(self.keys.evaluations).items()}

    @_wrap_errors
    def report_error(self, source: str, message: str, keep: int = 50) -> None:
        pipe = self.client.pipeline()
        pipe.lpush(self.keys.errors, f"{source}: {message}")
        pipe.ltrim(self.keys.errors, 0, keep - 1)
        pipe.execute()

    @_wrap_errors
    def recent_errors(self) -> list[str]:
        return [e.decode() for e in self.client.lrange(self.keys.errors, 0, -1)]

    # ------------------------------------------------------------ what `hotlap status` reads

    @_wrap_errors
    def identities(self) -> dict[str, float]:
        """Every identity (nonce) of this run id with a status hash in Redis -> when that status was
        last set (unix seconds, 0.0 when unknown), newest first. Finds a run without its store."""
        found: dict[str, float] = {}
        for key in self.client.scan_iter(match=RunKeys.every_identity_status(self.run_id), count=500):
            nonce = RunKeys.identity_in(self.run_id, key.decode())
            if nonce:
                updated = self.client.hget(key, "updated_at")
                found[nonce] = float(updated) if updated else 0.0
        return dict(sorted(found.items(), key=lambda item: -item[1]))

    @_wrap_errors
    def snapshot(self) -> dict[str, Any]:
        """The run's keys as Redis holds them now, read in one round trip (values decoded to str):
        `status`, `progress`, `trainer` (heartbeat), `accounting`, `worker_indexes` (hashes);
        `latest_version`, `trainer_lease` (str or None); `stream_depth` (entries in the experience
        stream, delivered or not); `errors` (the 5 newest); `memory` (the server's INFO memory)."""
        pipe = self.client.pipeline(transaction=False)
        hashes = {"status": self.keys.status, "progress": self.keys.progress, "trainer": self.keys.trainer,
                  "accounting": self.keys.accounting, "worker_indexes": self.keys.worker_indexes}
        for key in hashes.values():
            pipe.hgetall(key)
        pipe.get(self.keys.model)
        pipe.get(self.keys.trainer_lease)
        pipe.xlen(self.keys.experience)
        pipe.lrange(self.keys.errors, 0, 4)
        pipe.info("memory")
        *values, version, lease, depth, errors, memory = pipe.execute()
        snapshot: dict[str, Any] = {name: {k.decode(): v.decode() for k, v in value.items()}
                                    for name, value in zip(hashes, values, strict=True)}
        snapshot.update(latest_version=None if version is None else version.decode(),
                        trainer_lease=None if lease is None else lease.decode(), stream_depth=int(depth),
                        errors=[e.decode() for e in errors], memory=memory)
        return snapshot

    # ------------------------------------------------------------ workers

    @_wrap_errors
    def register_worker(self, worker_name: str) -> int:
        """The worker's index (DeepRacer's rollout index: worker 0 evaluates, file names carry it).

        A worker name keeps its index (a restarted container continues as the same worker), unless a
        live worker holds that index now. A new name takes the lowest index no live worker holds, so
        recreated containers reuse 0, 1, ... instead of counting up: an index whose worker's heartbeat
        expired (HEARTBEAT_TTL_S) is free again. Past 10 live workers the indexes go on from 10
        (docs/compatibility.md: deepracer-utils reads 0-9). The registration beats the worker's
        heartbeat in the same transaction, so two workers starting at once never share an index."""

        def claim(pipe: Any) -> int:
            indexes = {name.decode(): int(index) for name, index in pipe.hgetall(self.keys.worker_indexes).items()}
            held = {index for name, index in indexes.items()
                    if name != worker_name and pipe.exists(self.keys.worker(name))}
            index = indexes.get(worker_name)
            if index is None or index in held:
                index = next(i for i in range(len(held) + 1) if i not in held)
            pipe.multi()
            expired = [name for name, i in indexes.items() if i == index and name != worker_name]
            if expired:  # their heartbeats ran out: the index is this worker's now
                pipe.hdel(self.keys.worker_indexes, *expired)
            pipe.hset(self.keys.worker_indexes, worker_name, index)
            pipe.hset(self.keys.worker(worker_name), mapping={"index": index, "last_heartbeat": time.time()})
            pipe.expire(self.keys.worker(worker_name), HEARTBEAT_TTL_S)
            return index

        index: int = self.client.transaction(claim, self.keys.worker_indexes, value_from_callable=True)
        return index

    @_wrap_errors
    def worker_log_state(self, index: int) -> tuple[int, int] | None:
        """(next episode number, simtrace iteration) of the worker files of `index` in this run, or
        None when no worker of this run has written under `index` yet."""
        data = self.client.hgetall(self.keys.worker_log(index))
        if not data:
            return None
        return int(data.get(b"episodes", 0)), int(data.get(b"iteration", 0))

    @_wrap_errors
    def start_episodes(self, index: int, count: int) -> int:
        """Number `count` new episodes of worker `index`; returns the first number. Kept in Redis, so
        whichever worker holds the index next (a restart, a recreated container) goes on from there."""
        return int(self.client.hincrby(self.keys.worker_log(index), "episodes", count)) - count

    @_wrap_errors
    def set_worker_iteration(self, index: int, iteration: int) -> None:
        """The simtrace iteration worker `index` writes now (its next file is `iteration`)."""
        self.client.hset(self.keys.worker_log(index), "iteration", iteration)

    @_wrap_errors
    def heartbeat(self, worker_name: str, fields: dict[str, Any], ttl_s: int = HEARTBEAT_TTL_S) -> None:
        self._beat(self.keys.worker(worker_name), fields, ttl_s)

    @_wrap_errors
    def worker_heartbeat(self, worker_name: str) -> dict[str, str] | None:
        """The worker's last heartbeat fields, or None once its TTL ran out (or it never beat)."""
        return self._read_beat(self.keys.worker(worker_name))

    @_wrap_errors
    def trainer_beat(self, fields: dict[str, Any], ttl_s: int = TRAINER_HEARTBEAT_TTL_S) -> None:
        self._beat(self.keys.trainer, fields, ttl_s)

    @_wrap_errors
    def trainer_heartbeat(self) -> dict[str, str] | None:
        """The trainer's last heartbeat fields, or None once its TTL ran out (or it never beat)."""
        return self._read_beat(self.keys.trainer)

    def _beat(self, key: str, fields: dict[str, Any], ttl_s: int) -> None:
        pipe = self.client.pipeline()
        pipe.hset(key, mapping={**{k: str(v) for k, v in fields.items()}, "last_heartbeat": time.time()})
        pipe.expire(key, ttl_s)
        pipe.execute()

    def _read_beat(self, key: str) -> dict[str, str] | None:
        data = self.client.hgetall(key)
        return {k.decode(): v.decode() for k, v in data.items()} if data else None

    @_wrap_errors
    def live_workers(self) -> dict[str, dict[str, str]]:
        workers = {}
        for key in self.client.scan_iter(match=self.keys.worker_pattern, count=100):
            data = self.client.hgetall(key)
            if data:
                name = key.decode().rsplit(":", 1)[-1]
                workers[name] = {k.decode(): v.decode() for k, v in data.items()}
        return workers

    # ------------------------------------------------------------ the trainer lease

    @_wrap_errors
    def acquire_lease(self, holder: str, ttl_ms: int) -> str | None:
        """Take the trainer lease (SET NX PX). Returns None when taken, else the current holder
        ("" if it expired in between: ask again)."""
        if self.client.set(self.keys.trainer_lease, holder, nx=True, px=ttl_ms):
            return None
        current = self.client.get(self.keys.trainer_lease)
        return "" if current is None else str(current.decode())

    @_wrap_errors
    def renew_lease(self, holder: str, ttl_ms: int) -> bool:
        """Extend the lease; False when `holder` no longer holds it (it expired or another took it)."""
        return bool(self._renew_lease(keys=[self.keys.trainer_lease], args=[holder, ttl_ms]))

    @_wrap_errors
    def release_lease(self, holder: str) -> None:
        self._release_lease(keys=[self.keys.trainer_lease], args=[holder])

    @_wrap_errors
    def subscribe_versions(self) -> Iterator[int]:
        """Yields announced versions as they come (for progress displays)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.model)
        for message in pubsub.listen():
            try:
                yield int(message["data"])
            except (TypeError, ValueError):
                log.warning("ignoring malformed version announcement %r", message.get("data"))
