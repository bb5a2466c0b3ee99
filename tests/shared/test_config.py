import json

import pytest

from shared.config import ConfigError, Hyperparameters, ModelMetadata, RunSettings, ServiceConfig

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
        "action_space": [{"steering_angle": 45, "speed": 1.0}, {"steering_angle": 0, "speed": "fast"}],
        "sensor": ["FRONT_FACING_CAMERA", "RADAR"],
        "neural_network": "RESNET",
    }
    with pytest.raises(ConfigError) as info:
        ModelMetadata.parse(json.dumps(bad), "custom/model_metadata.json")
    text = str(info.value)
    assert "custom/model_metadata.json" in text
    assert "action_space.list[DiscreteAction].0.steering_angle" in text or "action_space" in text
    assert "45" in text
    assert "speed" in text
    assert "RADAR" in text
    assert "RESNET" in text
    assert len(info.value.problems) >= 4


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
    assert hp.term_cond_max_episodes == 1000
    resolved = json.loads(hp.to_json())
    assert list(resolved) == sorted(resolved)
    assert resolved["loss_type"] == "huber"


def test_hyperparameters_reject_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError) as info:
        Hyperparameters.parse(json.dumps({"learning_rate": 0.1, "discount_factor": 2, "loss_type": "l1"}))
    text = str(info.value)
    assert "learning_rate" in text and "discount_factor" in text and "loss_type" in text


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
