"""docs/configuration.md is generated from the config models and the CLI parser, and up to date."""

from __future__ import annotations

from hotlap.docs_gen import PAGE, REGENERATE, _cli_actions, collect_rows, render, undocumented
from shared.config import Hyperparameters, RunSettings, TrainerConfig, WorkerConfig


def test_the_committed_configuration_page_is_the_generated_one() -> None:
    assert PAGE.read_text() == render(), f"docs/configuration.md is out of date: run `{REGENERATE}` and commit it"


def test_every_setting_and_option_has_a_meaning() -> None:
    assert undocumented() == [], (
        "add a meaning for each: Field(description=...) in shared/config.py or an entry in "
        f"shared/settings_doc.py DESCRIPTIONS; a CLI option needs help=...; then run `{REGENERATE}`")


def test_every_variable_and_file_key_is_on_the_page() -> None:
    page = render()
    for model in (TrainerConfig, WorkerConfig, RunSettings):
        for field in model.model_fields.values():
            assert f"`{field.alias}`" in page, field.alias
    for name in Hyperparameters.model_fields:
        assert f"`{name}`" in page, name


def test_options_are_joined_to_the_variable_they_read() -> None:
    rows = {r.env: r for r in collect_rows() if r.env}
    assert rows["HOTLAP_TRACK"].options == ["--track"] and rows["HOTLAP_TRACK"].default() == "reInvent2019_track"
    assert rows["HOTLAP_REVERSE"].options == ["--reverse"]
    assert rows["HOTLAP_WORKERS"].options == ["--workers"]
    assert rows["HOTLAP_TENSORBOARD_DIR"].readers == ["trainer", "hotlap train"]
    assert rows["HOTLAP_STORE_URL"].default() == "(required)"
    assert rows["HOTLAP_WORKER_NAME"].default() == "<hostname>-<pid>"


def test_an_option_row_s_meaning_is_what_each_of_its_commands_says() -> None:
    """Options no variable backs merge only when their help is the same: `--json`, `--output` and
    `--version` mean different things to different commands."""
    helps = {(command, ", ".join(action.option_strings) or action.dest): action.help
             for command, action in _cli_actions()}
    option_rows = [r for r in collect_rows() if not r.env]
    for row in option_rows:
        for reader in row.readers:
            for option in row.options:
                assert helps[(reader.removeprefix("hotlap "), option)] == row.meaning, (reader, option)
    assert sum(row.options == ["--json"] for row in option_rows) == 3
