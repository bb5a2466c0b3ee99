"""The `hotlap` command: local training, seeding a run for compose, health checks, looking at runs,
listing tracks.

It composes the services; it does not re-implement them. Options default to the HOTLAP_*
environment variables, so the compose `init` service runs plain `python -m hotlap seed`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hotlap.errors import CommandError, EvaluationError
from hotlap.seed import SeedError, UserFiles, prepare_run_files, seed_store
from shared.config import REDIS_MAXMEMORY_BYTES, ConfigError, RunSettings, ServiceConfig, _problems_from
from shared.run_files import RunFiles
from shared.store import ModelStore, StoreError, open_store
from simulator.track import Track, TrackError

DEFAULT_RENDER_TRACK: str = RunSettings.model_fields["track"].default  # the run default
DEFAULT_REDIS_URL: str = ServiceConfig.model_fields["redis_url"].default  # the services' defaults
DEFAULT_RUN_ID: str = ServiceConfig.model_fields["run_id"].default


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _add_run_options(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    files = parser.add_argument_group("the run's files (DeepRacer formats; defaults are embedded)")
    files.add_argument("--custom-files", type=Path, default=env.get("HOTLAP_CUSTOM_FILES"),
                       help="folder with reward_function.py, model_metadata.json, hyperparameters.json")
    files.add_argument("--reward-function", type=Path, help="reward_function.py")
    files.add_argument("--model-metadata", type=Path, help="model_metadata.json")
    files.add_argument("--hyperparameters", type=Path, help="hyperparameters.json")
    run = parser.add_argument_group("run settings")
    run.add_argument("--track", default=env.get("HOTLAP_TRACK", "reInvent2019_track"),
                     help="DeepRacer track name (see `hotlap tracks`) or a track .npy file, "
                          "which is stored with the run")
    run.add_argument("--reverse", action="store_true", default=env.get("HOTLAP_REVERSE", "") in ("1", "true"),
                     help="drive the track in the other direction")
    run.add_argument("--max-iterations", type=int, default=_int_or_none(env.get("HOTLAP_MAX_ITERATIONS")),
                     help="training iterations (default: term_cond_max_episodes)")
    run.add_argument("--episodes-per-iteration", type=int,
                     default=_int_or_none(env.get("HOTLAP_EPISODES_PER_ITERATION")),
                     help="episodes between training (default: num_episodes_between_training)")
    run.add_argument("--max-steps", type=int, default=_int_or_none(env.get("HOTLAP_MAX_STEPS")),
                     help="per-episode step cap (DeepRacer: 10000)")
    run.add_argument("--cars-per-worker", type=int, default=_int_or_none(env.get("HOTLAP_CARS_PER_WORKER")),
                     help="cars each simulator process steps at once")
    run.add_argument("--schedule", choices=("sync", "async"), default=env.get("HOTLAP_SCHEDULE", "sync"),
                     help="sync: DeepRacer's on-policy iterations; async: workers never wait (bounded staleness)")
    run.add_argument("--workers", type=int, default=_int_or_none(env.get("HOTLAP_WORKERS")) or 1,
                     help="simulator worker processes")
    run.add_argument("--best-model-metric", choices=("progress", "reward", "laptime"),
                     default=env.get("HOTLAP_BEST_MODEL_METRIC") or None,
                     help="DeepRacer's BEST_MODEL_METRIC: how model/deepracer_checkpoints.json ranks versions by "
                          "their evaluation episodes (default progress; laptime: lower is better)")
    run.add_argument("--min-eval-trials", type=int, default=_int_or_none(env.get("HOTLAP_MIN_EVAL_TRIALS")),
                     help="DeepRacer's MIN_EVAL_TRIALS: greedy evaluation episodes worker 0 drives with each "
                          "version (default 5; 0: no evaluation)")
    run.add_argument("--pretrained", default=env.get("HOTLAP_PRETRAINED") or None, metavar="RUN[@VERSION]",
                     help="clone: start from another run's weights (a run folder or store URL, file://… or "
                          "s3://…; VERSION a number, best or last (default)); same sensors and network required")
    run.add_argument("--allow-no-camera", action="store_true",
                     default=env.get("HOTLAP_ALLOW_NO_CAMERA", "").lower() in ("1", "true", "yes"),
                     help="train a lidar-only model_metadata.json (no camera; env HOTLAP_ALLOW_NO_CAMERA=1): a "
                          "hotlap-only model, since DeepRacer and the car require a camera; refused without it")
    run.add_argument("--overwrite", action="store_true",
                     default=env.get("HOTLAP_OVERWRITE", "").lower() in ("1", "true", "yes"),
                     help="when the store already holds a run with different files, delete that run "
                          "(models, logs, metrics) and start a new one (env HOTLAP_OVERWRITE=1); "
                          "without it seeding refuses, and the same files resume the run")


def _settings_from(args: argparse.Namespace) -> RunSettings:
    values = {"track": args.track, "reverse": args.reverse, "schedule": args.schedule,
              "num_workers": args.workers}
    if args.max_steps is not None:
        values["max_steps_per_episode"] = args.max_steps
    if args.cars_per_worker is not None:
        values["cars_per_worker"] = args.cars_per_worker
    if args.best_model_metric is not None:
        values["best_model_metric"] = args.best_model_metric
    if args.min_eval_trials is not None:
        values["min_eval_trials"] = args.min_eval_trials
    try:
        return RunSettings.model_validate(values)
    except ValidationError as e:
        raise SeedError(str(ConfigError("run settings (command-line options)", _problems_from(e)))) from e


def _prepare(args: argparse.Namespace) -> RunFiles:
    explicit = UserFiles(args.reward_function, args.model_metadata, args.hyperparameters)
    files = UserFiles.from_folder(args.custom_files).merged(explicit)
    run_files = prepare_run_files(files, _settings_from(args), max_iterations=args.max_iterations,
                                  episodes_per_iteration=args.episodes_per_iteration,
                                  allow_no_camera=args.allow_no_camera)
    if args.pretrained:
        from hotlap.clone import with_pretrained

        run_files = with_pretrained(run_files, args.pretrained, getattr(args, "s3_endpoint_url", None)
                                    or os.environ.get("HOTLAP_S3_ENDPOINT_URL"))
    return run_files


def cmd_seed(args: argparse.Namespace) -> int:
    problems = []
    try:
        run_files = _prepare(args)
    except SeedError as e:
        problems.append(str(e))
    try:
        config = ServiceConfig.from_env()
    except ConfigError as e:
        problems.append(str(e))
    if problems:
        raise SeedError("\n".join(problems))
    store = ModelStore(open_store(config.store_url, config.s3_endpoint_url))
    seeded = seed_store(store, run_files, overwrite=args.overwrite)
    what = {"new": "seeded a new run", "resumed": "same files: resuming run",
            "overwritten": "deleted the earlier run and seeded a new run"}[seeded.outcome]
    print(f"{what} {config.run_id} (identity {seeded.nonce}) in {store.url}: track {run_files.settings.track}, "
          f"{run_files.settings.max_iterations} iterations of "
          f"{run_files.hyperparameters.num_episodes_between_training} episodes")
    failure = store.failure()
    if seeded.outcome == "resumed" and failure:
        print(f"note: this run failed and stays failed: {failure}\n"
              f"fix the cause, then seed with --overwrite (HOTLAP_OVERWRITE=1) or use a new model prefix")
    return 0


QUICK_START_ITERATIONS = 10
QUICK_START_CARS_PER_WORKER = 4


def cmd_train(args: argparse.Namespace) -> int:
    from hotlap.local import LocalRun, train_locally

    uses_default_hyperparameters = args.hyperparameters is None and not (
        args.custom_files and (args.custom_files / "hyperparameters.json").is_file())
    if args.max_iterations is None and uses_default_hyperparameters:
        # DeepRacer's term_cond_max_episodes (100,000 iterations if unset) takes days; a first run, minutes.
        args.max_iterations = QUICK_START_ITERATIONS
    if args.cars_per_worker is None:
        args.cars_per_worker = QUICK_START_CARS_PER_WORKER
    run_files = _prepare(args)
    run_id = args.run_id or time.strftime("hotlap-%Y%m%d-%H%M%S")
    store_url = args.store or f"file://{(args.runs_dir / run_id).resolve()}"
    run = LocalRun(run_id=run_id, store_url=store_url, s3_endpoint_url=args.s3_endpoint_url,
                   workers=args.workers, redis_url=args.redis_url, overwrite=args.overwrite,
                   redis_maxmemory=args.redis_maxmemory,
                   log_dir=(args.runs_dir / run_id / "logs" / "processes").resolve() if not args.store else None,
                   tensorboard_dir=Path(args.tensorboard).resolve() if args.tensorboard else None,
                   banner=f"training {run_id} on {run_files.settings.track}: {args.workers} worker(s) × "
                          f"{run_files.settings.cars_per_worker} car(s), {run_files.settings.max_iterations} "
                          f"iterations × {run_files.hyperparameters.num_episodes_between_training} episodes, "
                          f"sensors {','.join(run_files.metadata.sensor)} → {store_url}",
                   resume_command=resume_command(args.argv, run_id))
    return train_locally(run, run_files)


def resume_command(argv: Sequence[str], run_id: str) -> str:
    """The command that resumes this run: as it was typed, with ``--run-id`` added when the run id was
    generated (without it the same command starts a new run), run by the hotlap that runs now."""
    program = sys.argv[0]
    if os.path.basename(program) == "hotlap":
        relative = os.path.relpath(program)
        program = relative if not relative.startswith("..") else program
    else:  # python -m hotlap
        program = f"{os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable}" \
                  " -m hotlap"
    words = list(argv)
    if not any(word == "--run-id" or word.startswith("--run-id=") for word in words):
        words += ["--run-id", run_id]
    return f"{program} {shlex.join(words)}"


HEALTH_POLL_S = 2.0


def cmd_health(args: argparse.Namespace) -> int:
    from hotlap.health import check

    deadline = time.monotonic() + args.wait
    while True:
        health = check(args.role, os.environ)
        if health.healthy or time.monotonic() >= deadline:
            break
        time.sleep(HEALTH_POLL_S)
    print(f"{args.role} {'healthy' if health.healthy else 'unhealthy'}: {health.reason}",
          file=sys.stdout if health.healthy else sys.stderr)
    return 0 if health.healthy else 1


def cmd_tracks(args: argparse.Namespace) -> int:
    from simulator.track import available_tracks, load_track

    print(f"{'track':40s} {'length m':>9s} {'width m':>8s} {'shape':>7s} {'direction':>10s}")
    for name in available_tracks():
        track = load_track(name)
        width = float(track.row_width.mean())
        direction = "ccw" if track.is_ccw else "cw"
        shape = "loop" if track.closed else "open"
        print(f"{name:40s} {track.length:9.2f} {width:8.2f} {shape:>7s} {direction:>10s}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from hotlap.render import render_png
    from simulator.track import load_track

    policy: object | None = None
    sensors: tuple[str, ...] = ("STEREO_CAMERAS",) if args.stereo else ("FRONT_FACING_CAMERA",)
    stack_size = 1
    if args.model:
        policy, sensors, stack_size = _load_policy(args.model, args.s3_endpoint_url, args.version)
    if args.track:
        track = load_track(args.track)
    elif args.model:  # the track the model trained on, a stored track file included
        track = _run_track(args.model, args.s3_endpoint_url)
    else:
        track = load_track(DEFAULT_RENDER_TRACK)
    result = render_png(track, sensors, args.output, steps=args.steps, frames=args.frames,
                        policy=policy, reverse=args.reverse, stack_size=stack_size)
    driver = f"model {args.model}" if args.model else "centre-line pure pursuit"
    print(f"wrote {args.output}: {len(result.frames)} camera frames and the trajectory of {driver} on "
          f"{track.name} ({len(result.trajectory)} steps, {result.status}, progress {result.progress:.1f}%)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from hotlap.plot import plot_run
    from hotlap.runs import open_run

    store, name = open_run(args.run, args.s3_endpoint_url)
    output = args.output or Path("hotlap-plots") / name
    result = plot_run(store, output, name)
    for path in result.written:
        print(f"wrote {path}")
    for reason in result.skipped:
        print(f"skipped {reason}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from hotlap.runs import format_table, list_runs, to_json

    now = time.time()
    runs = list_runs(args.store, args.s3_endpoint_url, now)
    if args.json:
        print(to_json(runs))
    elif not runs:
        print(f"no runs in {args.store}")
    else:
        print(format_table(runs, now))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hotlap.status import show

    if args.interval <= 0 or args.count < 0:
        raise CommandError(f"--interval must be > 0 and --count >= 0 (got {args.interval}, {args.count})")
    return show(args.redis_url, args.run, as_json=args.json, watch=args.watch or args.count > 0,
                interval_s=args.interval, count=args.count)


def _run_track(store_url: str, s3_endpoint_url: str | None) -> Track:
    """The track a run drives, as its workers load it (a stored track file, else the packaged route)."""
    from hotlap.runs import open_run
    from shared.run_files import load_run_files
    from simulator.track import load_run_track

    store, _ = open_run(store_url, s3_endpoint_url)
    files = load_run_files(store)
    return load_run_track(files.settings.track, files.track_npy, f"{store.url}/{files.settings.track_file}")


def _load_policy(store_url: str, s3_endpoint_url: str | None,
                 version: int | None) -> tuple[object, tuple[str, ...], int]:
    """(policy, sensors, stack_size) of a run's model version, as its workers built it."""
    from hotlap.runs import open_run
    from shared.config import Hyperparameters, ModelMetadata
    from shared.networks import check_architecture, load_state_from_bytes
    from shared.run_files import build_policy
    from shared.store import HYPERPARAMETERS, MODEL_METADATA

    store, _ = open_run(store_url, s3_endpoint_url)
    metadata = ModelMetadata.parse(store.get_text(MODEL_METADATA), f"{store.url}/{MODEL_METADATA}")
    hyperparameters = Hyperparameters.parse(store.get_text(HYPERPARAMETERS), f"{store.url}/{HYPERPARAMETERS}")
    stack_size = hyperparameters.stack_size
    chosen = version if version is not None else store.latest_version()
    if chosen is None:
        raise StoreError(f"{store.url}: no model version published yet")
    policy = build_policy(metadata, hyperparameters)
    model = store.load_version(chosen)
    check_architecture(policy, model.manifest, f"{store.url}/model/{chosen}")
    load_state_from_bytes(policy, model.weights)
    policy.eval()
    return policy, tuple(metadata.sensor), stack_size


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from hotlap.evaluate import CAMERAS, EvaluationSettings, evaluate
    from hotlap.models import load_model, open_run
    from simulator.track import load_track

    if args.video:
        from hotlap.video import check_video_path

        check_video_path(args.video)  # before any trial runs
    settings = EvaluationSettings(trials=args.trials, reverse=args.reverse, continuous=args.continuous,
                                  off_track_penalty_s=args.off_track_penalty, max_resets=args.max_resets,
                                  max_steps=args.max_steps, record_frames=args.video is not None)
    problems = settings.problems()
    if problems:
        raise EvaluationError("; ".join(problems))
    model = load_model(open_run(args.run, args.s3_endpoint_url), args.version)
    if args.video and not any(sensor in CAMERAS for sensor in model.sensors):
        raise EvaluationError(f"--video {args.video}: the model's sensors {list(model.sensors)} include no camera, "
                              "so there are no frames to show; `hotlap render` draws its drive on the track map")
    track = load_track(args.track) if args.track else model.run_track()
    result = evaluate(model, track, settings, write=args.write)
    summary = result.to_json()
    if args.video:
        from hotlap.video import write_video

        summary["video"] = {"path": str(args.video), "frames": write_video(args.video, result.trials, track)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(result.table())
    if result.metrics_key:
        print(f"wrote {model.store.url}/{result.metrics_key}\n      {model.store.url}/{result.simtrace_key}")
    if args.video:
        print(f"wrote {args.video} ({summary['video']['frames']} frames at 15 fps)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hotlap.export import check_format, export

    check_format(args.format)  # before loading anything
    from hotlap.models import load_model, open_run

    model = load_model(open_run(args.run, args.s3_endpoint_url), args.version)
    path = export(model, args.format, args.output)
    print(f"wrote {path}: model version {model.version} of {model.store.url} as {args.format}")
    return 0


def _add_model_options(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    from hotlap.models import VERSION_CHOICES_HELP

    parser.add_argument("run", help="the run: a run folder, file:///path or s3://bucket/prefix")
    parser.add_argument("--version", default="last", help=f"{VERSION_CHOICES_HELP} (default: last)")
    parser.add_argument("--s3-endpoint-url", default=env.get("HOTLAP_S3_ENDPOINT_URL"))


def _add_evaluate_parser(commands: Any, env: Mapping[str, str]) -> None:
    from hotlap import evaluate as ev

    evaluate = commands.add_parser(
        "evaluate", help="greedy trials of a model: lap times, DeepRacer's evaluation metrics and simtrace",
        description="Trials start at evenly spaced points of the lap (0, 1/3, 2/3 for 3): the simulator is "
                    "deterministic, so trials from one start would repeat one drive.")
    _add_model_options(evaluate, env)
    evaluate.add_argument("--track", help="track name (see `hotlap tracks`) or .npy file (default: the run's)")
    evaluate.add_argument("--reverse", action="store_true", help="drive the track in the other direction")
    evaluate.add_argument("--trials", type=int, default=ev.DEFAULT_TRIALS,
                          help=f"trials, spread over the lap (default {ev.DEFAULT_TRIALS})")
    evaluate.add_argument("--continuous", action=argparse.BooleanOptionalAction, default=True,
                          help="reset the car after an off track and go on (DRfC's DR_EVAL_IS_CONTINUOUS, "
                               "default); --no-continuous ends the trial there")
    evaluate.add_argument("--off-track-penalty", type=float, default=ev.DEFAULT_OFF_TRACK_PENALTY_S,
                          help=f"seconds added per off track (default {ev.DEFAULT_OFF_TRACK_PENALTY_S})")
    evaluate.add_argument("--max-resets", type=int, default=ev.DEFAULT_MAX_RESETS,
                          help=f"resets before a trial ends unfinished (default {ev.DEFAULT_MAX_RESETS})")
    evaluate.add_argument("--max-steps", type=int, default=ev.DEFAULT_MAX_STEPS,
                          help=f"steps (1/15 s) before a trial ends unfinished (default {ev.DEFAULT_MAX_STEPS})")
    evaluate.add_argument("--video", type=Path, help="write a lap video (.mp4 or .gif): camera beside a map")
    evaluate.add_argument("--no-write", dest="write", action="store_false",
                          help="do not store the evaluation metrics and simtrace in the run")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_export_parser(commands: Any, env: Mapping[str, str]) -> None:
    export = commands.add_parser("export", help="write a model's policy for other tools (ONNX)")
    _add_model_options(export, env)
    export.add_argument("--format", required=True,
                        help="onnx (inputs and outputs as DeepRacer's car uses them); car: the .tar.gz a physical "
                             "DeepRacer car loads (pip install -e '.[car]'); droa: refused, see docs/export.md")
    export.add_argument("--output", type=Path, help="file to write (default: <run>-v<version>.<format>)")
    export.set_defaults(func=cmd_export)


def _add_status_parser(commands: Any, env: Mapping[str, str]) -> None:
    from hotlap.status import DEFAULT_INTERVAL_S

    status = commands.add_parser(
        "status", help="a live run from its Redis: workers, trainer, stream, Redis memory, episode accounting",
        description="Reads the run's keys in Redis (nothing from the store): finished runs stay there for "
                    "HOTLAP_FINISHED_RUN_TTL_S; `hotlap runs` lists runs from their store.")
    status.add_argument("run", nargs="?", default=env.get("HOTLAP_RUN_ID") or DEFAULT_RUN_ID,
                        help="the run id (`hotlap train` names the run folder after it; "
                             f"default: HOTLAP_RUN_ID, else {DEFAULT_RUN_ID})")
    status.add_argument("--redis-url", default=env.get("HOTLAP_REDIS_URL") or DEFAULT_REDIS_URL,
                        help="the run's Redis (`hotlap train` prints it when it starts its own; "
                             f"default: HOTLAP_REDIS_URL, else {DEFAULT_REDIS_URL})")
    status.add_argument("--json", action="store_true",
                        help="print one JSON object (with --watch: one per line, each refresh)")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C (which exits 0)")
    status.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                        help=f"seconds between refreshes with --watch (default {DEFAULT_INTERVAL_S:g})")
    status.add_argument("--count", type=int, default=0, metavar="N",
                        help="refresh N times, then exit (implies --watch; default 0: until Ctrl-C)")
    status.set_defaults(func=cmd_status)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotlap", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train locally: own Redis, local folder store, N workers")
    _add_run_options(train, env)
    train.add_argument("--run-id", help="default: hotlap-<timestamp>")
    train.add_argument("--runs-dir", type=Path, default=Path(env.get("HOTLAP_RUNS_DIR", "hotlap-runs")),
                       help="where local runs are stored (default ./hotlap-runs)")
    train.add_argument("--store", help="store URL instead of a local folder, e.g. s3://bucket/prefix")
    train.add_argument("--s3-endpoint-url", default=env.get("HOTLAP_S3_ENDPOINT_URL"))
    train.add_argument("--redis-url", help="use this Redis instead of starting one")
    train.add_argument("--redis-maxmemory", type=int, metavar="BYTES",
                       default=_int_or_none(env.get("HOTLAP_REDIS_MAXMEMORY")) or REDIS_MAXMEMORY_BYTES,
                       help="maxmemory (noeviction) of the Redis hotlap train starts; the experience stream "
                            "may hold half of it (HOTLAP_STREAM_MAX_BYTES overrides)")
    train.add_argument("--tensorboard", type=Path, metavar="DIR", default=env.get("HOTLAP_TENSORBOARD_DIR"),
                       help="write TensorBoard scalars (charts/*, losses/*) to DIR; needs "
                            "pip install -e '.[tensorboard]'")
    train.set_defaults(func=cmd_train)

    seed = commands.add_parser("seed", help="validate the run's files and put them in the store (compose init)")
    _add_run_options(seed, env)
    seed.set_defaults(func=cmd_seed)

    render = commands.add_parser("render", help="PNG of camera frames and a top-down map with a trajectory")
    render.add_argument("--track", help=f"track name or .npy file (default: the run's track with --model, "
                        f"else {DEFAULT_RENDER_TRACK})")
    render.add_argument("--output", type=Path, default=Path("hotlap-render.png"), help="the PNG to write")
    render.add_argument("--model", help="a run folder or its store URL (file:///... or s3://bucket/prefix); "
                        "default: a centre-line pure-pursuit driver")
    render.add_argument("--version", type=int, help="model version (default: latest)")
    render.add_argument("--s3-endpoint-url", default=env.get("HOTLAP_S3_ENDPOINT_URL"))
    render.add_argument("--steps", type=int, default=400, help="steps to drive (15 per second)")
    render.add_argument("--frames", type=int, default=6, help="camera frames in the strip")
    render.add_argument("--reverse", action="store_true", help="drive the track in the other direction")
    render.add_argument("--stereo", action="store_true", help="render the stereo camera (left lens shown)")
    render.set_defaults(func=cmd_render)

    health = commands.add_parser("health", help="exit 0 if a role is healthy, from its heartbeat in Redis or "
                                 "the run's files in the store (container probes)")
    health.add_argument("--role", required=True, choices=("trainer", "simulator", "seed"),
                        help="trainer/simulator: its heartbeat; seed: the run's files are in the store")
    health.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="keep checking until healthy or SECONDS have passed (e.g. to wait for the seed)")
    health.set_defaults(func=cmd_health)

    plot = commands.add_parser("plot", help="PNG charts of a run: learning, paths by speed, actions, lap times")
    plot.add_argument("run", help="a run folder (e.g. hotlap-runs/<run-id>) or its store URL (file://… or s3://…)")
    plot.add_argument("--output", type=Path, help="folder for the PNGs (default: hotlap-plots/<run name>)")
    plot.add_argument("--s3-endpoint-url", default=env.get("HOTLAP_S3_ENDPOINT_URL"))
    plot.set_defaults(func=cmd_plot)

    runs = commands.add_parser("runs", help="every run in a folder or S3 prefix: track, status, versions, metrics")
    runs.add_argument("store", nargs="?", default=env.get("HOTLAP_RUNS_DIR", "hotlap-runs"),
                      help="a folder of runs or a store URL (file://… or s3://bucket/prefix); default ./hotlap-runs")
    runs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    runs.add_argument("--s3-endpoint-url", default=env.get("HOTLAP_S3_ENDPOINT_URL"))
    runs.set_defaults(func=cmd_runs)

    _add_status_parser(commands, env)
    _add_evaluate_parser(commands, env)
    _add_export_parser(commands, env)

    tracks = commands.add_parser("tracks", help="list the DeepRacer tracks hotlap ships")
    tracks.set_defaults(func=cmd_tracks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(os.environ).parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: the resume command repeats it
    # Warnings (a lidar-only model, values the car clips, a misspelt custom file) say they are warnings;
    # the services configure their own logging (shared.logs).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Ctrl-C (`kill -INT`) ends every command, also one started by a script with `&`, which inherits
    # SIGINT ignored (a terminal's Ctrl-C never reaches a background job's group anyway).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = args.func(args)
        return code
    except (SeedError, ConfigError, StoreError, TrackError, CommandError) as e:
        print(f"hotlap {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
