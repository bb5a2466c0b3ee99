import json
import logging
from importlib import resources

import numpy as np
import pytest

from shared.config import (
    DEEPRACER_HYPERPARAMETER_DEFAULTS,
    HOTLAP_EXTENSION_DEFAULTS,
    MAX_STEERING_DEG,
    ConfigError,
    Hyperparameters,
    ModelMetadata,
    RunSettings,
    ServiceConfig,
)
from simulator.car import CarState

DISCRETE = {
    "action_space": [{"steering_angle": -30, "speed": 0.6, "index": 0}, {"steering_angle": 15.5, "speed": 1.0}],
    "sensor": ["FRONT_FACING_CAMERA"],
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "training_algorithm": "clipped_ppo",
    "action_space_type": "discrete",
    "version": "5",
}
CONTINUOUS = {
    "action_space": {"speed": {"high": 2, "low": 1}, "steering_angle": {"high": 30, "low": -30}},
    "sensor": ["STEREO_CAMERAS", "LIDAR"],
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "training_algorithm": "clipped_ppo",
    "action_space_type": " Continuous ",
    "version": 5,
}


def test_discrete_metadata_as_drfc_writes_it():
    meta = ModelMetadata.parse(json.dumps(DISCRETE))
    spec = meta.action_spec()
    assert spec.kind == "discrete"
    assert spec.discrete_actions == ((-30.0, 0.6), (15.5, 1.0))
    assert meta.version == "5"


def test_continuous_metadata_normalises_type_and_version():
    meta = ModelMetadata.parse(json.dumps(CONTINUOUS))
    spec = meta.action_spec()
    assert meta.action_space_type == "continuous"
    assert spec.kind == "continuous"
    assert spec.steering_range == (-30.0, 30.0)
    assert spec.speed_range == (1.0, 2.0)
    assert meta.version == "5"


def test_defaults_when_keys_absent():
    meta = ModelMetadata.parse(json.dumps({"action_space": DISCRETE["action_space"]}))
    assert meta.sensor == ["FRONT_FACING_CAMERA"]
    assert meta.neural_network == "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"
    assert meta.training_algorithm == "clipped_ppo"


def test_every_problem_is_reported_at_once_with_field_paths():
    bad = {
        "action_space": [{"steering_angle": 0, "speed": "fast"}, {"steering_angle": 10}],
        "sensor": ["FRONT_FACING_CAMERA", "RADAR"],
        "neural_network": "RESNET",
    }
    with pytest.raises(ConfigError) as info:
        ModelMetadata.parse(json.dumps(bad), "custom/model_metadata.json")
    text = str(info.value)
    assert "custom/model_metadata.json" in text
    assert "RADAR" in text
    assert "RESNET" in text
    # One message per real problem, each with its path; nothing about the continuous form.
    assert [p.split(":")[0] for p in info.value.problems] == [
        "action_space.discrete.0.speed", "action_space.discrete.1.speed", "sensor", "neural_network"]
    assert "continuous" not in text.lower()


def test_malformed_json_names_file_and_position():
    with pytest.raises(ConfigError) as info:
        ModelMetadata.parse('{"action_space": [', "model_metadata.json")
    assert "model_metadata.json" in str(info.value)
    assert "line 1" in str(info.value)


def test_missing_action_space():
    with pytest.raises(ConfigError, match="no action space defined"):
        ModelMetadata.parse("{}")


def test_type_must_match_space():
    data = dict(DISCRETE, action_space_type="continuous")
    with pytest.raises(ConfigError, match="continuous"):
        ModelMetadata.parse(json.dumps(data))


def test_sac_is_rejected_clearly():
    with pytest.raises(ConfigError, match="clipped_ppo"):
        ModelMetadata.parse(json.dumps(dict(DISCRETE, training_algorithm="sac")))


def test_hyperparameters_defaults_and_deepracer_output():
    hp = Hyperparameters.parse("{}")
    assert hp.num_episodes_between_training == 20
    assert hp.term_cond_max_episodes == 100000
    resolved = json.loads(hp.to_json())
    assert list(resolved) == sorted(resolved)
    assert resolved["loss_type"] == "mean squared error"


def test_hyperparameters_reject_bad_values():
    with pytest.raises(ConfigError) as info:
        Hyperparameters.parse(json.dumps({"lr": 0, "discount_factor": 2, "loss_type": "l1"}))
    text = str(info.value)
    assert "lr" in text and "discount_factor" in text and "loss_type" in text
    assert len(info.value.problems) == 3


def test_run_settings_yaml_roundtrip_uses_deepracer_keys():
    settings = RunSettings(track="Oval_track", max_iterations=3)
    text = settings.to_yaml()
    assert "WORLD_NAME: Oval_track" in text
    assert RunSettings.parse(text) == settings


def test_service_config_from_env_reports_all_problems():
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_env({"HOTLAP_RUN_ID": "bad id!", "HOTLAP_REDIS_URL": "http://x"})
    text = str(info.value)
    assert "HOTLAP_RUN_ID" in text and "HOTLAP_REDIS_URL" in text and "HOTLAP_STORE_URL" in text


def test_empty_environment_values_mean_unset():
    from shared.config import WorkerConfig

    config = WorkerConfig.from_env({"HOTLAP_STORE_URL": "file:///tmp/x", "HOTLAP_CARS_PER_WORKER": ""})
    assert config.cars_per_worker is None


# --------------------------------------------------------------------------- files DeepRacer accepts (issue 6)

# simapp's own test file (bundle/markov/tests/test_utils_parse_model_metadata.py): the re:Invent 2018
# action space, steering ±45°, nothing but "action_space" in the file.
REINVENT_2018 = {"action_space": [
    {"steering_angle": 45, "speed": 0.8}, {"steering_angle": -45, "speed": 0.8}, {"steering_angle": 0, "speed": 0.8},
    {"steering_angle": 22.5, "speed": 0.8}, {"steering_angle": -22.5, "speed": 0.8},
    {"steering_angle": 0, "speed": 0.4},
]}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_reinvent_2018_action_space_is_accepted_and_clipped_when_driving(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="hotlap.config")
    meta = ModelMetadata.parse(json.dumps(REINVENT_2018), "legacy/model_metadata.json")
    # DeepRacer's parse: sensor "observation" (the front camera), the shallow network, clipped PPO.
    assert meta.sensor == ["FRONT_FACING_CAMERA"]
    assert meta.neural_network == "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"
    # The file's values are kept (the reward function's params["steering_angle"] is the action's value) ...
    assert meta.action_spec().discrete_actions[:2] == ((45.0, 0.8), (-45.0, 0.8))
    # ... with one warning that names the file and the values the car will clip.
    [warning] = _warnings(caplog)
    assert "legacy/model_metadata.json" in warning
    assert "action 0 steering_angle 45" in warning and "action 1 steering_angle -45" in warning
    assert "22.5" not in warning and "0.4" not in warning
    # At drive time the car clips to DeepRacer's ±30°.
    cars = CarState.at_rest(2)
    for _ in range(30):
        cars.step(np.arange(2), np.array([45.0, -45.0]), np.array([0.8, 0.8]))
    np.testing.assert_allclose(np.degrees(cars.steering), [MAX_STEERING_DEG, -MAX_STEERING_DEG], rtol=1e-3)


def test_values_beyond_the_limits_in_either_form_are_accepted_with_one_warning(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="hotlap.config")
    discrete = {"action_space": [{"steering_angle": 0, "speed": 5}, {"steering_angle": 0, "speed": 0.05}]}
    ModelMetadata.parse(json.dumps(discrete), "fast.json")
    continuous = dict(CONTINUOUS, action_space={"speed": {"low": 0.5, "high": 4.5},
                                                "steering_angle": {"low": -40, "high": 30}})
    meta = ModelMetadata.parse(json.dumps(continuous), "wide.json")
    assert meta.action_spec().steering_range == (-40.0, 30.0)
    fast, wide = _warnings(caplog)
    assert fast.startswith("fast.json") and "action 0 speed 5" in fast and "action 1 speed 0.05" in fast
    assert wide.startswith("wide.json")
    assert "steering_angle range [-40, 30]" in wide and "speed range [0.5, 4.5]" in wide
    caplog.clear()
    ModelMetadata.parse(json.dumps(DISCRETE), "fine.json")
    assert _warnings(caplog) == []


@pytest.mark.parametrize(("data", "problem"), [
    ({"sensor": ["FRONT_FACING_CAMERA"]}, "no action space defined"),
    ({"action_space": 5}, "action_space: must be a list"),
    ({"action_space": []}, "no actions defined"),
    ({"action_space": [{"steering_angle": 0}]}, "action_space.discrete.0.speed: Field required"),
    ({"action_space": [{"steering_angle": float("nan"), "speed": 1}]}, "not a finite number"),
    ({"action_space": {"speed": {"low": 2, "high": 1}, "steering_angle": {"low": -30, "high": 30}},
      "action_space_type": "continuous"}, "low <= high"),
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["FRONT_FACING_CAMERA", "STEREO_CAMERAS"]},
     "exactly one camera"),
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": []}, "no sensor"),
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "action_space_type": "box"}, "action_space_type"),
    # simapp: float(version) raises on a non-number
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "version": "v5"}, "version 'v5' is not a number"),
    # simapp: version >= 2 reads data["sensor"], a KeyError without it
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "version": "5"}, "sensor: missing; version '5'"),
    ({"action_space": [{"steering_angle": 0, "speed": 1}], "version": 2}, "sensor: missing; version 2"),
])
def test_what_deepracer_rejects_is_rejected_with_one_message(data: dict, problem: str):
    with pytest.raises(ConfigError) as info:
        ModelMetadata.parse(json.dumps(data), "m.json")
    assert len(info.value.problems) == 1, info.value.problems
    assert problem in info.value.problems[0]


@pytest.mark.parametrize("version", ["1", 1, "1.9"])
def test_a_file_before_version_2_drives_the_camera_whatever_its_sensor_says(
    caplog: pytest.LogCaptureFixture, version: str | int
):
    """simapp parse_model_metadata reads ``sensor`` only if float(version) >= 2; before, the car has the
    camera ("observation") alone (deepracer-formats.md §2)."""
    caplog.set_level(logging.WARNING, logger="hotlap.config")
    data = {"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["STEREO_CAMERAS", "LIDAR"],
            "version": version}
    assert ModelMetadata.parse(json.dumps(data), "old/model_metadata.json").sensor == ["FRONT_FACING_CAMERA"]
    [warning] = _warnings(caplog)
    assert warning.startswith("old/model_metadata.json: version") and "STEREO_CAMERAS" in warning
    caplog.clear()
    for read in ("2", "5", 2.0):  # from version 2 on, the sensor list is DeepRacer's
        assert ModelMetadata.parse(json.dumps(dict(data, version=read)), "m.json").sensor == ["STEREO_CAMERAS", "LIDAR"]
    assert _warnings(caplog) == []


def test_a_broken_discrete_list_reports_no_continuous_noise():
    data = {"action_space": [{"steering_angle": "left", "speed": 1.0}]}
    with pytest.raises(ConfigError) as info:
        ModelMetadata.parse(json.dumps(data), "m.json")
    assert [p.split(":")[0] for p in info.value.problems] == ["action_space.discrete.0.steering_angle"]
    assert "ContinuousActionSpace" not in str(info.value) and "continuous" not in str(info.value)


def test_unknown_hyperparameter_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="hotlap.config")
    text = json.dumps({"lr": 0.001, "learning_rate": 0.1, "my_note": "v2", "num_epochs": 3})
    hp = Hyperparameters.parse(text, "custom_files/hyperparameters.json")
    assert hp.lr == 0.001 and hp.num_epochs == 3
    [warning] = _warnings(caplog)
    assert "custom_files/hyperparameters.json" in warning
    assert "'learning_rate'" in warning and "'my_note'" in warning and "'lr'" not in warning.split("known")[0]
    resolved = json.loads(hp.to_json())
    assert "learning_rate" not in resolved and "my_note" not in resolved


# DeepRacer's code defaults, written out from deepracer-formats.md §3.1 (simapp get_updated_hyper_parameters).
DEEPRACER_CODE_DEFAULTS = {
    "batch_size": 64, "beta_entropy": 0.01, "discount_factor": 0.999, "e_greedy_value": 0.05,
    "epsilon_steps": 10000, "exploration_type": "categorical", "loss_type": "mean squared error", "lr": 0.0003,
    "num_episodes_between_training": 20, "num_epochs": 10, "stack_size": 1, "term_cond_avg_score": 100000.0,
    "term_cond_max_episodes": 100000,
}


def test_missing_hyperparameters_take_deepracer_s_code_defaults_from_one_table():
    assert DEEPRACER_HYPERPARAMETER_DEFAULTS == DEEPRACER_CODE_DEFAULTS
    parsed = Hyperparameters.parse("{}").model_dump()
    assert {k: parsed[k] for k in DEEPRACER_CODE_DEFAULTS} == DEEPRACER_CODE_DEFAULTS
    # the resolved file DeepRacer writes back holds exactly its 13 keys (plus hotlap's extension keys)
    resolved = json.loads(Hyperparameters.parse("{}").to_json())
    assert set(resolved) == set(DEEPRACER_CODE_DEFAULTS) | set(HOTLAP_EXTENSION_DEFAULTS)


def test_the_embedded_defaults_file_shows_the_same_values():
    shipped = json.loads(resources.files("hotlap.defaults").joinpath("hyperparameters.json").read_text())
    assert shipped == DEEPRACER_HYPERPARAMETER_DEFAULTS


def test_retention_settings_from_the_environment():
    from shared.config import TrainerConfig

    config = TrainerConfig.from_env({"HOTLAP_STORE_URL": "/tmp/x", "HOTLAP_PINNED_VERSIONS": "3, 7"})
    assert config.keep_versions == 4 and config.pinned_versions == {3, 7}  # DeepRacer keeps 4 + the best
    with pytest.raises(ConfigError, match="HOTLAP_KEEP_VERSIONS"):
        TrainerConfig.from_env({"HOTLAP_STORE_URL": "/tmp/x", "HOTLAP_KEEP_VERSIONS": "0"})
    with pytest.raises(ConfigError, match="HOTLAP_PINNED_VERSIONS"):
        TrainerConfig.from_env({"HOTLAP_STORE_URL": "/tmp/x", "HOTLAP_PINNED_VERSIONS": "best"})
