"""Generates docs/configuration.md from the config models and the `hotlap` argument parser.

    python -m hotlap.docs_gen            # rewrite docs/configuration.md
    python -m hotlap.docs_gen --check    # exit 1 if the committed page differs (tests run this)

Names, types and defaults come from the code (shared.config's models, hotlap.cli.build_parser);
meanings from `shared.settings_doc`. Which environment variable a CLI option reads is found by
building the parser with each variable set and seeing which option's default changes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hotlap.cli import QUICK_START_CARS_PER_WORKER, QUICK_START_ITERATIONS, build_parser
from shared.config import Hyperparameters, ModelMetadata, RunSettings, ServiceConfig, TrainerConfig, WorkerConfig
from shared.settings_doc import UNDOCUMENTED, SettingRow, setting_rows

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "python -m hotlap.docs_gen"
PROBE_VALUES = ("7", "1")  # "1" turns on flags (HOTLAP_REVERSE); "7" differs from defaults of 1

# Which processes read each process config (every process reads ServiceConfig's fields).
PROCESS_CONFIGS: tuple[tuple[str, type[ServiceConfig]], ...] = (
    ("trainer", TrainerConfig), ("simulator", WorkerConfig), ("hotlap seed", ServiceConfig),
)


@dataclass
class Row:
    env: str = ""
    options: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)
    env_default: str = ""
    option_default: str = ""
    meaning: str = ""

    def setting(self) -> str:
        return "<br>".join([f"`{self.env}`"] * bool(self.env) + [f"`{o}`" for o in self.options])

    def default(self) -> str:
        if self.env_default and self.options and self.env_default != self.option_default:
            return f"{self.env_default} (option: {self.option_default})"
        return self.env_default or self.option_default


class _RecordingEnv(dict[str, str]):
    """An empty environment that remembers which variables the parser asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return default


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_defaults(parser: argparse.ArgumentParser) -> dict[tuple[str, str], Any]:
    return {(name, action.dest): action.default for name, sub in _subcommands(parser).items()
            for action in sub._actions}


def _options_reading_env() -> dict[tuple[str, str], str]:
    """(subcommand, dest) -> the environment variable its default comes from."""
    recorder = _RecordingEnv()
    base = _option_defaults(build_parser(recorder))
    found: dict[tuple[str, str], str] = {}
    for variable in dict.fromkeys(recorder.asked):
        for value in PROBE_VALUES:
            probed = _option_defaults(build_parser({variable: value}))
            found.update({key: variable for key, default in probed.items() if default != base[key]})
    return found


def _option_default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "(unset)"
    return str(action.default)


def _cli_actions() -> Iterable[tuple[str, argparse.Action]]:
    for name, sub in _subcommands(build_parser({})).items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, action


def collect_rows() -> list[Row]:
    """Every environment variable and CLI option: one row per setting, an option merged into the
    row of the variable it reads."""
    rows: dict[str, Row] = {}
    for process, model in PROCESS_CONFIGS:
        for setting in setting_rows(model):
            row = rows.setdefault(setting.name, Row(env=setting.name, env_default=setting.default,
                                                    meaning=setting.meaning))
            row.readers.append(process)
    env_of = _options_reading_env()
    for command, action in _cli_actions():
        option = ", ".join(action.option_strings) or action.dest
        variable = env_of.get((command, action.dest), "")
        # An option no variable backs is one row per meaning: `--json` of `hotlap runs` (a list) and of
        # `hotlap status` (one object) are different settings under one name.
        key = variable or f"{option}\0{action.help or ''}"
        row = rows.setdefault(key, Row(env=variable, meaning=action.help or UNDOCUMENTED))
        if option not in row.options:
            row.options.append(option)
            row.option_default = row.option_default or _option_default(action)
        row.readers.append(f"hotlap {command}")
        if row.meaning == UNDOCUMENTED and action.help:
            row.meaning = action.help
    return sorted(rows.values(), key=lambda r: (r.env or "~", r.options))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _file_table(rows: list[SettingRow]) -> list[str]:
    return _table(["key", "type", "default", "meaning"],
                  ([f"`{r.name}`", r.type, r.default, r.meaning] for r in rows))


def render() -> str:
    rows = collect_rows()
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{REGENERATE}` from shared/config.py, shared/settings_doc.py and hotlap/cli.py. "
        "Do not edit by hand: change the code, then regenerate. -->",
        "",
        "Every setting hotlap reads: the environment variables of its processes (`python -m trainer`, "
        "`python -m simulator`, `hotlap seed`) and the options of the `hotlap` command. An option that "
        "has an environment variable takes its default from it. An empty value (`HOTLAP_X=` in `.env`) "
        "means unset. Compose passes these from `.env` (see `.env.example`); Kubernetes from "
        "`infra/k8s/base/settings.env`. `python -m trainer --help` and `python -m simulator --help` print "
        "their part of this table.",
        "",
        f"`hotlap train` with the embedded hyperparameters runs {QUICK_START_ITERATIONS} iterations "
        f"unless `--max-iterations` is given, and {QUICK_START_CARS_PER_WORKER} cars per worker unless "
        "`--cars-per-worker` is given.",
        "",
        "## Environment variables and command-line options",
        "",
        *_table(["setting", "read by", "default", "meaning"],
                ([r.setting(), ", ".join(dict.fromkeys(r.readers)), r.default(), r.meaning] for r in rows)),
        "",
        "## The run's files",
        "",
        "DeepRacer's formats; a key missing from a file takes the default shown.",
        "",
        "### hyperparameters.json",
        "",
        "What DeepRacer and hotlap do with each key: [hyperparameters.md](hyperparameters.md).",
        "",
        *_file_table(setting_rows(Hyperparameters, by_alias=False)),
        "",
        "### model_metadata.json",
        "",
        *_file_table(setting_rows(ModelMetadata, by_alias=False)),
        "",
        "### training_params.yaml",
        "",
        "Written by `hotlap train` / `hotlap seed` from their options and stored with the run; every "
        "process reads it from the store, so a worker started anywhere trains the same run.",
        "",
        *_file_table(setting_rows(RunSettings)),
        "",
    ]
    return "\n".join(lines)


def undocumented() -> list[str]:
    """Settings without a meaning: each needs Field(description=...) or a shared.settings_doc entry."""
    models: list[tuple[type[BaseModel], bool]] = [(model, True) for _, model in PROCESS_CONFIGS]
    models += [(Hyperparameters, False), (ModelMetadata, False), (RunSettings, True)]
    names = [r.name for model, by_alias in models for r in setting_rows(model, by_alias)
             if r.meaning == UNDOCUMENTED]
    names += [", ".join(r.options) for r in collect_rows() if r.meaning == UNDOCUMENTED]
    return sorted(set(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
