"""`hotlap runs [STORE]`: every run in a local folder or an S3 prefix, read from the store alone.

A run is a model prefix holding ``training_params.yaml`` (what `hotlap train` / `hotlap seed`
write first). Its status comes from the store: ``failed`` with the reason when ``ip/failed``
exists (written by whichever process failed the run; a failed run is not trained again), ``done``
when ``ip/done`` exists (the trainer writes it at the last iteration); otherwise ``running`` while
files keep being written, and ``stopped`` once nothing was written for STALE_AFTER_S.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.config import ConfigError, RunSettings
from shared.store import (
    CHECKPOINTS_INDEX,
    DONE_MARKER,
    FAILED_MARKER,
    MANIFEST_FILE,
    TRAINING_PARAMS,
    LocalStore,
    ModelStore,
    ObjectInfo,
    S3Store,
    StoreError,
    open_store,
)

# A trainer writes every iteration and workers upload every iteration; a run silent this long has stopped.
STALE_AFTER_S = 15 * 60.0


def open_run(run: str, s3_endpoint_url: str | None = None) -> tuple[ModelStore, str]:
    """A run folder (path) or store URL (file://…, s3://bucket/prefix) -> (its store, a short name).

    Raises StoreError when it is not a hotlap run (no training_params.yaml) or cannot be read.
    """
    if "://" in run:
        objects = open_store(run, s3_endpoint_url)
        name = run.rstrip("/").rsplit("/", 1)[-1]
    else:
        path = Path(run).expanduser().resolve()
        if not path.is_dir():
            raise StoreError(f"{run}: no such run folder")
        objects, name = LocalStore(path), path.name
    store = ModelStore(objects)
    if not objects.exists(TRAINING_PARAMS):
        raise StoreError(f"{store.url} is not a hotlap run: it has no {TRAINING_PARAMS} "
                         "(give a run folder such as hotlap-runs/<run-id>, or its store URL)")
    return store, name


@dataclass(frozen=True)
class RunSummary:
    run: str  # the run's path inside STORE ("." when STORE is the run itself)
    url: str
    track: str | None
    status: str  # failed | done | running | stopped
    reason: str
    versions: int  # published model versions, 0 included
    latest_version: int | None
    best_checkpoint: str | None  # model/deepracer_checkpoints.json (deepracer-formats.md §4.2)
    best_metric: float | None  # its avg_eval_metric
    metric: str  # BEST_MODEL_METRIC of the run
    last_iteration: int | None  # the iteration that produced latest_version
    last_reward: float | None  # its mean episode reward
    last_progress: float | None  # its mean progress, %
    last_laps: int | None  # its completed laps
    size_bytes: int
    updated: float  # newest object's modification time, seconds since the epoch
    problems: list[str]  # run files that could not be read, each with the reason


def _run_prefixes(infos: list[ObjectInfo]) -> list[str]:
    """Prefixes ("" or "name/…/") of the runs among the listed keys."""
    prefixes = set()
    for info in infos:
        if info.key == TRAINING_PARAMS:
            prefixes.add("")
        elif info.key.endswith("/" + TRAINING_PARAMS):
            prefixes.add(info.key[: -len(TRAINING_PARAMS)])
    return sorted(prefixes)


def _sub_store(objects: LocalStore | S3Store, prefix: str, s3_endpoint_url: str | None) -> ModelStore:
    if not prefix:
        return ModelStore(objects)
    if isinstance(objects, LocalStore):
        return ModelStore(LocalStore(objects.root / prefix.rstrip("/")))
    inner = f"{objects.prefix}/{prefix}" if objects.prefix else prefix
    return ModelStore(S3Store(objects.bucket, inner, s3_endpoint_url, client=objects.client))


def _json_or_none(store: ModelStore, key: str, problems: list[str]) -> Any:
    """The JSON in `key`, or None with the problem noted (a listing shows every run, even a damaged one)."""
    try:
        return json.loads(store.get_text(key))
    except (StoreError, json.JSONDecodeError) as e:
        problems.append(f"{key}: {e}")
        return None


def summarise(store: ModelStore, run: str, infos: list[ObjectInfo], now: float) -> RunSummary:
    """One run's summary from its store and the listing of its objects (keys relative to the run)."""
    keys = {info.key for info in infos}
    updated = max((info.modified for info in infos), default=0.0)
    problems: list[str] = []
    try:
        settings: RunSettings | None = RunSettings.parse(store.get_text(TRAINING_PARAMS),
                                                         f"{store.url}/{TRAINING_PARAMS}")
    except (ConfigError, StoreError) as e:
        settings = None
        problems.append(str(e))
    if FAILED_MARKER in keys:
        try:
            reason = store.failure() or "(no reason recorded)"
        except StoreError as e:
            reason = "(the reason could not be read)"
            problems.append(str(e))
        status = "failed"
    elif DONE_MARKER in keys:
        status, reason = "done", ""
    elif now - updated < STALE_AFTER_S:
        status, reason = "running", ""
    else:
        status = "stopped"
        reason = (f"no {DONE_MARKER} and nothing written for {(now - updated) / 60:.0f} min: stopped or "
                  "interrupted (the same command resumes it)")
    versions = sorted(int(k.split("/")[1]) for k in keys
                      if k.startswith("model/") and k.endswith("/" + MANIFEST_FILE) and k.split("/")[1].isdigit())
    try:
        latest = store.latest_version()
    except StoreError as e:
        latest = versions[-1] if versions else None
        problems.append(str(e))
    checkpoints = _json_or_none(store, CHECKPOINTS_INDEX, problems) if CHECKPOINTS_INDEX in keys else None
    best = checkpoints.get("best_checkpoint") if isinstance(checkpoints, dict) else None
    best = best if isinstance(best, dict) else {}
    manifest = _json_or_none(store, f"model/{latest}/{MANIFEST_FILE}", problems) if latest else None
    stats = manifest.get("training_stats") if isinstance(manifest, dict) else None
    stats = stats if isinstance(stats, dict) and stats else {}
    return RunSummary(
        run=run or ".", url=store.url, track=settings.track if settings else None, status=status, reason=reason,
        versions=len(versions), latest_version=latest,
        best_checkpoint=best.get("name"), best_metric=best.get("avg_eval_metric", best.get("avg_comp_pct")),
        metric=settings.best_model_metric if settings else "progress",
        last_iteration=latest if stats else None,
        last_reward=stats.get("mean_reward"), last_progress=stats.get("mean_progress"),
        last_laps=int(stats["laps_completed"]) if "laps_completed" in stats else None,
        size_bytes=sum(info.size for info in infos), updated=updated, problems=problems,
    )


def list_runs(store_url: str, s3_endpoint_url: str | None = None, now: float | None = None) -> list[RunSummary]:
    """Every run under ``store_url`` (a folder path, file://… or s3://bucket/prefix), by run path."""
    if "://" in store_url:
        objects = open_store(store_url, s3_endpoint_url)
    else:
        path = Path(store_url).expanduser().resolve()
        if not path.is_dir():
            raise StoreError(f"{store_url}: no such folder")
        objects = LocalStore(path)
    infos = objects.list_info()
    now = time.time() if now is None else now
    summaries = []
    for prefix in _run_prefixes(infos):
        nested = [p for p in _run_prefixes(infos) if p != prefix and p.startswith(prefix)]
        own = [ObjectInfo(i.key[len(prefix):], i.size, i.modified) for i in infos
               if i.key.startswith(prefix) and not any(i.key.startswith(p) for p in nested)]
        summaries.append(summarise(_sub_store(objects, prefix, s3_endpoint_url), prefix.rstrip("/"), own, now))
    return summaries


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def format_table(runs: list[RunSummary], now: float) -> str:
    header = ("run", "track", "status", "versions", "best checkpoint", "last iteration", "size", "updated")
    rows = [header]
    for r in runs:
        best = (f"{r.best_checkpoint} ({r.metric} {r.best_metric:.1f})"
                if r.best_checkpoint and r.best_metric is not None else "-")
        last = (f"{r.last_iteration}: reward {r.last_reward:.1f}, progress {r.last_progress:.1f}%, "
                f"{r.last_laps} laps" if r.last_iteration is not None and r.last_reward is not None
                and r.last_progress is not None else "-")
        latest = f"{r.versions} (latest {r.latest_version})" if r.latest_version is not None else str(r.versions)
        rows.append((r.run, r.track or "?", r.status, latest, best, last, _size(r.size_bytes), _age(now - r.updated)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"{r.run}: {r.reason}" for r in runs if r.reason]
    lines += [f"{r.run}: cannot read {problem}" for r in runs for problem in r.problems]
    return "\n".join(lines)


def to_json(runs: list[RunSummary]) -> str:
    return json.dumps([asdict(r) for r in runs], indent=2)
