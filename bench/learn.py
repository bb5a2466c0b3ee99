"""How fast and how reliably hotlap learns to lap: issue 8 item 5's learning benchmark.

    .venv/bin/python bench/learn.py                                  # 3 rewards, default actions, 10 min each
    .venv/bin/python bench/learn.py --rewards pace --fast-lap --budget-s 900       # 5b: 4 m/s, both spaces
    .venv/bin/python bench/learn.py --rewards centerline --iterations 40 --generalise reInvent2019_track Oval_track
    .venv/bin/python bench/learn.py --rewards centerline --action-spaces lidar_only --budget-s 300   # 5e
    .venv/bin/python bench/learn.py --budget-s 60 -- --episodes-per-iteration 4   # more `hotlap train` args
    .venv/bin/python bench/learn.py --combine bench/results/learn*.json --png all.png  # one table and plot

For each case (a reward function x an action space) it runs `hotlap train` from scratch on
``--track`` (default ``reinvent_base``, the re:Invent 2018 track) for at most ``--iterations``
iterations or ``--budget-s`` seconds (then stops it as Ctrl-C does), keeping every version. Then it
evaluates every version with `hotlap evaluate`'s machinery (hotlap/evaluate.py): ``--trials`` greedy
trials starting at 0, 1/3 and 2/3 of the lap (the simulator is deterministic: one start proves
nothing), not continuous — a trial that leaves the track ends there, so a lap is a clean lap — and
lap times in simulation time (15 steps/s). It reports per case:

- time to a reliable lap (5a): wall-clock seconds since `hotlap train` started and env steps trained on
  until the first version whose greedy trials are all laps;
- fast lap (5b, ``--fast-lap``): the best greedy lap time of any version, with its time;
- stability (5c): the largest per-iteration KL (``approx_kl_max`` of the manifests), iterations stopped
  early by ``hotlap_target_kl``, and whether the best version (model/deepracer_checkpoints.json) and the
  last one still lap every trial at the end;
- generalisation (5d, ``--generalise TRACK ...``): the best version's trials on tracks it never saw.

Rewards: ``centerline`` is hotlap's default (hotlap/defaults/reward_function.py); ``pace`` and
``heading`` are in bench/rewards/. Action spaces: ``default`` (hotlap's, 1.2 m/s top speed),
``fast_discrete`` / ``fast_continuous`` (bench/action_spaces/, up to 4 m/s, DeepRacer's top speed;
deepracer-formats.md §2), ``lidar_only`` (5e: the default actions with a lidar and no camera, trained with
``--allow-no-camera``). Writes ``--json`` (bench/results/learn.json) and ``--png`` (the learning
curves: evaluation progress and KL per version against wall-clock time). Not a test: it takes minutes
per case and its numbers depend on the machine and its load (both recorded).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, print_table, write_result  # noqa: E402
from shared.config import CAMERA_SENSORS  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
REWARDS = {
    "centerline": REPO / "hotlap" / "defaults" / "reward_function.py",
    "pace": BENCH / "rewards" / "pace.py",
    "heading": BENCH / "rewards" / "waypoint_heading.py",
}
ACTION_SPACES = {
    "default": None,  # hotlap/defaults/model_metadata.json
    "fast_discrete": BENCH / "action_spaces" / "fast_discrete.json",
    "fast_continuous": BENCH / "action_spaces" / "fast_continuous.json",
    # 5e: hotlap's default actions with a lidar and no camera (hotlap-only, trained with --allow-no-camera)
    "lidar_only": BENCH / "action_spaces" / "lidar_only.json",
}
STOP_GRACE_S = 60.0  # after Ctrl-C, how long `hotlap train` gets to stop its processes


@dataclass(frozen=True)
class Case:
    reward: str
    action_space: str

    @property
    def name(self) -> str:
        return f"{self.reward}-{self.action_space}".replace("_", "-")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewards", nargs="+", choices=list(REWARDS), default=list(REWARDS))
    parser.add_argument("--fast-lap", action="store_true",
                        help="train with the 4 m/s action spaces (discrete and continuous) instead of the default")
    parser.add_argument("--action-spaces", nargs="+", choices=list(ACTION_SPACES),
                        help="train with these action spaces (default: 'default', or both 4 m/s ones with --fast-lap)")
    parser.add_argument("--window-s", type=float, default=900.0,
                        help="also report the best lap of the versions published within this many seconds "
                             "(5b: the best lap within 15 minutes of training)")
    parser.add_argument("--track", default="reinvent_base")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=40, help="training iterations at most")
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall-clock seconds of training per case")
    parser.add_argument("--trials", type=int, default=3, help="greedy trials per version (starts k/n of the lap)")
    parser.add_argument("--eval-max-steps", type=int, default=1500, help="steps per trial at most (15 per s)")
    parser.add_argument("--target-kl", default=None,
                        help="hyperparameters.json hotlap_target_kl for every case ('off': DeepRacer-exact); "
                             "default: hotlap's")
    parser.add_argument("--generalise", nargs="*", default=[], metavar="TRACK",
                        help="also evaluate each case's best version on these tracks")
    parser.add_argument("--runs-dir", type=Path,
                        help="keep the runs here (default: a temporary folder, deleted at the end: every version "
                             "is kept for evaluation, about 70 MB each)")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "learn.json")
    parser.add_argument("--png", type=Path, default=BENCH / "results" / "learn.png")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="train nothing: print one table of these result files' cases and plot them in --png")
    parser.add_argument("extra", nargs="*", help="more `hotlap train` arguments (after --)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------- training


def train(case: Case, args: argparse.Namespace, runs: Path) -> tuple[Path, float, float, int]:
    """Run `hotlap train` for one case within the budget; (run folder, start epoch s, seconds, exit code)."""
    command = [sys.executable, "-m", "hotlap", "train", "--workers", str(args.workers), "--track", args.track,
               "--max-iterations", str(args.iterations), "--runs-dir", str(runs), "--run-id", case.name,
               "--reward-function", str(REWARDS[case.reward])]
    metadata = ACTION_SPACES[case.action_space]
    if metadata is not None:
        command += ["--model-metadata", str(metadata)]
        if not any(s in CAMERA_SENSORS for s in json.loads(metadata.read_text())["sensor"]):
            command.append("--allow-no-camera")
    if args.target_kl is not None:
        hp = runs / f"{case.name}-hyperparameters.json"
        hp.write_text(json.dumps({"hotlap_target_kl": None if args.target_kl == "off" else float(args.target_kl)}))
        command += ["--hyperparameters", str(hp)]
    env = os.environ | {"HOTLAP_KEEP_VERSIONS": "1000000",  # every version stays, to be evaluated after
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (runs / f"{case.name}.out").open("wb")
    started_epoch, started = time.time(), time.monotonic()
    proc = subprocess.Popen([*command, *args.extra], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=args.budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the trainer publishes what it trained, the store keeps it
        try:
            code = proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # a second Ctrl-C: stop at once
            code = proc.wait()
    finally:
        log.close()
    return runs / case.name, started_epoch, time.monotonic() - started, code


# --------------------------------------------------------------------------------------- evaluation


def evaluate_versions(run: Path, started_epoch: float, args: argparse.Namespace) -> dict[str, Any]:
    """Every version's greedy trials, its time since `hotlap train` started and the steps trained on."""
    from hotlap.evaluate import EvaluationSettings, evaluate
    from hotlap.models import load_model
    from shared.store import ModelStore, open_store
    from simulator.track import load_track

    store = ModelStore(open_store(f"file://{run}"))
    settings = EvaluationSettings(trials=args.trials, continuous=False, max_steps=args.eval_max_steps)
    track = load_track(args.track)
    steps_before = steps_per_iteration(store)
    rows = []
    for version in store.list_versions():
        manifest = store.load_version(version).manifest
        stats = manifest.get("training_stats", {})
        result = evaluate(load_model(store, str(version)), track, settings, write=False)
        rows.append({
            "version": version, "seconds": round(manifest["published_at"] - started_epoch, 1),
            "env_steps": sum(steps_before.get(i, 0) for i in range(version)),
            "laps": result.laps_completed, "trials": len(result.trials),
            "progress": round(sum(t.progress for t in result.trials) / len(result.trials), 2),
            "best_lap_s": result.best_lap_s, "approx_kl": stats.get("approx_kl"),
            "approx_kl_max": stats.get("approx_kl_max"), "stopped_early": stats.get("stopped_early"),
            "epochs": stats.get("epochs"), "value_loss": stats.get("value_loss"),
            "train_laps": stats.get("laps_completed"),
        })
    return {"versions": rows, "best_version": best_version(store)}


def steps_per_iteration(store: Any) -> dict[int, int]:
    """Iteration -> env steps of the episodes it trained on (logs/episodes.csv)."""
    steps: dict[int, int] = {}
    try:
        text = store.get_text("logs/episodes.csv")
    except Exception:  # noqa: BLE001 - a run stopped before its first iteration has no episode log
        return steps
    for row in csv.DictReader(io.StringIO(text)):
        steps[int(row["iteration"])] = steps.get(int(row["iteration"]), 0) + int(row["steps"])
    return steps


def best_version(store: Any) -> int | None:
    """The version model/deepracer_checkpoints.json names best (DeepRacer's BEST_MODEL_METRIC), if any."""
    try:
        index = json.loads(store.get_text("model/deepracer_checkpoints.json"))
        return int(str(index["best_checkpoint"]["name"]).rsplit("/", 1)[-1])
    except Exception:  # noqa: BLE001 - no evaluation credited yet
        return None


def generalisation(run: Path, version: int, tracks: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    from hotlap.evaluate import EvaluationSettings, evaluate
    from hotlap.models import load_model
    from shared.store import ModelStore, open_store
    from simulator.track import load_track

    store = ModelStore(open_store(f"file://{run}"))
    settings = EvaluationSettings(trials=args.trials, continuous=False, max_steps=args.eval_max_steps)
    results = []
    for name in tracks:
        result = evaluate(load_model(store, str(version)), load_track(name), settings, write=False)
        results.append({"track": name, "version": version, "laps": result.laps_completed,
                        "trials": len(result.trials), "best_lap_s": result.best_lap_s,
                        "progress": round(sum(t.progress for t in result.trials) / len(result.trials), 2)})
    return results


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The version row with the shortest best lap, or None."""
    return min(rows, key=lambda r: r["best_lap_s"]) if rows else None


def summarise(case: Case, evaluated: dict[str, Any], seconds: float, code: int, window_s: float) -> dict[str, Any]:
    rows = evaluated["versions"]
    reliable = next((r for r in rows if r["trials"] and r["laps"] == r["trials"]), None)
    laps = [r for r in rows if r["best_lap_s"] is not None]
    # a racer's lap: from a version that laps every trial, not one lucky trial of a version that crashes
    reliable_laps = [r for r in laps if r["laps"] == r["trials"]]
    fastest, fastest_reliable = _fastest(laps), _fastest(reliable_laps)
    fastest_in_window = _fastest([r for r in laps if r["seconds"] <= window_s])
    fastest_reliable_in_window = _fastest([r for r in reliable_laps if r["seconds"] <= window_s])
    kls = [r["approx_kl_max"] for r in rows if r["approx_kl_max"] is not None]
    best = next((r for r in rows if r["version"] == evaluated["best_version"]), None)
    last = rows[-1] if rows else None
    return {
        "case": case.name, "reward": case.reward, "action_space": case.action_space,
        "train_seconds": round(seconds, 1), "exit_code": code, "versions": len(rows),
        "reliable_lap_version": reliable and reliable["version"],
        "reliable_lap_seconds": reliable and reliable["seconds"],
        "reliable_lap_env_steps": reliable and reliable["env_steps"],
        "best_lap_s": fastest and fastest["best_lap_s"], "best_lap_version": fastest and fastest["version"],
        "best_lap_seconds": fastest and fastest["seconds"],
        "window_s": window_s, "best_lap_in_window_s": fastest_in_window and fastest_in_window["best_lap_s"],
        "best_lap_in_window_version": fastest_in_window and fastest_in_window["version"],
        "best_reliable_lap_s": fastest_reliable and fastest_reliable["best_lap_s"],
        "best_reliable_lap_version": fastest_reliable and fastest_reliable["version"],
        "best_reliable_lap_seconds": fastest_reliable and fastest_reliable["seconds"],
        "best_reliable_lap_in_window_s": fastest_reliable_in_window and fastest_reliable_in_window["best_lap_s"],
        "iterations": max((r["version"] for r in rows), default=0),
        "max_kl": max(kls) if kls else None,
        "iterations_stopped_early": sum(bool(r["stopped_early"]) for r in rows),
        "best_version": evaluated["best_version"],
        "best_version_laps_all": best is not None and best["laps"] == best["trials"],
        "last_version_laps_all": last is not None and last["trials"] > 0 and last["laps"] == last["trials"],
    }


# ---------------------------------------------------------------------------------------------- plot


def plot(cases: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (progress_ax, lap_ax, kl_ax) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for case in cases:
        rows = case["versions"]
        seconds = [r["seconds"] for r in rows]
        line, = progress_ax.plot(seconds, [r["progress"] for r in rows], marker=".", label=case["summary"]["case"])
        laps = [(r["seconds"], r["progress"]) for r in rows if r["trials"] and r["laps"] == r["trials"]]
        if laps:
            progress_ax.scatter(*zip(*laps, strict=True), marker="*", s=120, color=line.get_color())
        reliable = [(r["seconds"], r["best_lap_s"]) for r in rows if r["best_lap_s"] and r["laps"] == r["trials"]]
        if reliable:
            lap_ax.plot(*zip(*reliable, strict=True), marker=".", color=line.get_color())
        kl = [(r["seconds"], r["approx_kl_max"]) for r in rows if r["approx_kl_max"]]
        if kl:
            kl_ax.plot(*zip(*kl, strict=True), marker=".", color=line.get_color())
    progress_ax.set_ylabel("greedy evaluation progress (%)\n(* = every trial a lap)")
    progress_ax.set_ylim(0, 105)
    progress_ax.legend(fontsize=8)
    progress_ax.set_title(title, fontsize=9)
    lap_ax.set_ylabel("best greedy lap (s, sim time)\nof versions lapping 3/3")
    kl_ax.set_yscale("log")
    kl_ax.set_ylabel("approx KL of the update (max epoch)")
    kl_ax.set_xlabel("wall-clock seconds since `hotlap train` started")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


TABLE = [("case", "case", "s"), ("versions", "versions", "d"), ("reliable_lap_seconds", "3/3 at s", ".0f"),
         ("reliable_lap_env_steps", "3/3 steps", "d"), ("best_lap_s", "best lap s", ".2f"),
         ("best_lap_seconds", "at s", ".0f"), ("best_lap_in_window_s", "best in window", ".2f"),
         ("best_reliable_lap_s", "best 3/3 lap s", ".2f"), ("best_reliable_lap_seconds", "at s", ".0f"),
         ("best_reliable_lap_in_window_s", "3/3 in window", ".2f"),
         ("max_kl", "max KL", ".3g"), ("iterations_stopped_early", "KL stops", "d"),
         ("best_version_laps_all", "best 3/3", ""), ("last_version_laps_all", "last 3/3", "")]


def print_results(results: list[dict[str, Any]]) -> None:
    """The summary table, then each case's generalisation trials."""
    print_table(TABLE, [r["summary"] for r in results])
    for result in results:
        for g in result["generalisation"]:
            print(f"  {result['summary']['case']} v{g['version']} on {g['track']}: {g['laps']}/{g['trials']} laps, "
                  f"best lap {g['best_lap_s'] or '-'} s, progress {g['progress']:.1f}%")


def read_result(path: Path) -> dict[str, Any]:
    """A result file of this benchmark; SystemExit naming the file and what is wrong with it."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"--combine {path}: cannot read it as JSON: {e}") from e
    if not isinstance(document, dict) or document.get("benchmark") != "learn" or not isinstance(
            document.get("rows"), list) or not all(isinstance(r, dict) and "summary" in r for r in document["rows"]):
        raise SystemExit(f"--combine {path}: not a bench/learn.py result (its \"benchmark\" is "
                         f"{document.get('benchmark') if isinstance(document, dict) else None!r})")
    return document


def combine(paths: list[Path], png: Path) -> int:
    """One table and one learning-curve PNG from several runs of this benchmark (each with its machine)."""
    documents = [read_result(path) for path in paths]
    results = []
    for document in documents:  # summaries recomputed from the versions: files of older versions of this script too
        window_s = float(document["settings"].get("window_s", 900.0))
        for row in document["rows"]:
            old = row["summary"]
            evaluated = {"versions": row["versions"], "best_version": old["best_version"]}
            summary = summarise(Case(old["reward"], old["action_space"]), evaluated, old["train_seconds"],
                                old["exit_code"], window_s)
            results.append(row | {"summary": summary})
    for path, document in zip(paths, documents, strict=True):
        print(f"{path}: {machine_line(document['machine'])}; {' '.join(document['command'])}")
    print_results(results)
    first = documents[0]["machine"]
    loads = ", ".join(f"{document['machine']['loadavg_start'][0]:.1f}" for document in documents)
    plot(results, png, f"{first['cpu_model']}, {first['cores']} cores, {first['memory_gib']} GiB; "
                       f"{len(paths)} benchmark runs, load average at their start {loads}")
    print(f"wrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        if args.png.suffix.lower() != ".png":
            raise SystemExit(f"--png {args.png}: the plot is a .png file")
        return combine(args.combine, args.png)
    info = machine() | {"trainer_device": os.environ.get("HOTLAP_DEVICE", "auto")}
    print(machine_line(info))
    spaces = args.action_spaces or (["fast_discrete", "fast_continuous"] if args.fast_lap else ["default"])
    cases = [Case(reward, space) for reward in args.rewards for space in spaces]
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="hotlap-bench-learn-"))
    runs.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        print(f"{case.name}: training (at most {args.iterations} iterations, {args.budget_s:.0f}s) in {runs}",
              flush=True)
        run, started_epoch, seconds, code = train(case, args, runs)
        evaluated = evaluate_versions(run, started_epoch, args) if (run / "model").is_dir() else \
            {"versions": [], "best_version": None}
        summary = summarise(case, evaluated, seconds, code, args.window_s)
        general = []
        if args.generalise and evaluated["versions"]:
            version = summary["best_version"] if summary["best_version"] is not None else \
                evaluated["versions"][-1]["version"]
            general = generalisation(run, version, args.generalise, args)
        results.append({"summary": summary, "versions": evaluated["versions"], "generalisation": general})
        print(f"  {summary['versions']} versions in {seconds:.0f}s (exit {code}); load average "
              + ", ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    rows = [r["summary"] for r in results]
    print(f"{machine_line(info)}; track {args.track}, {args.workers} workers, {args.trials} trials per version")
    print_results(results)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {"cases": rows}
    result = write_result(args.json, "learn", info, settings, results, summary)
    plot(results, args.png, machine_line(result["machine"]))
    print(f"wrote {args.json} and {args.png}")
    if args.runs_dir is None:  # every version of every case is kept for evaluation: gigabytes, not kept
        shutil.rmtree(runs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
