"""The model contract: every network x sensor set x action kind builds, acts and round-trips its weights."""

from __future__ import annotations

import ast
import copy
import inspect
import json
import math
import pickle

import numpy as np
import pytest
import safetensors.torch
import torch

import shared.networks as networks
from shared.networks import (
    CAMERA_SENSORS,
    DEEP,
    DEEP_CONV,
    NETWORKS,
    SHALLOW,
    ActionSpec,
    ModelFormatError,
    PolicyNetwork,
    load_state_from_bytes,
    observation_spec_for,
    state_to_bytes,
)

DISCRETE = ActionSpec("discrete", ((-30.0, 0.6), (-15.0, 0.8), (0.0, 1.0), (15.0, 0.8), (30.0, 0.6)))
CONTINUOUS = ActionSpec("continuous", steering_range=(-25.0, 20.0), speed_range=(1.0, 2.5))
# Images are smaller than DeepRacer's 120x160 to keep the matrix quick on a shared CPU (the layers do not
# care; DEEP needs >= 76 px); test_full_size_images_give_deepracer_layer_shapes covers 120x160.
SPECS: dict[str, dict[str, tuple[int, ...]]] = {
    "camera": {"FRONT_FACING_CAMERA": (84, 96)},
    "stereo": {"STEREO_CAMERAS": (2, 84, 96)},
    "camera+lidar": {"FRONT_FACING_CAMERA": (84, 96), "LIDAR": (64,)},
    "lidar": {"SECTOR_LIDAR": (8,)},
}
# DeepRacer's stereo stack for the deeper networks is stride-1-heavy (57M weights at 120x160).
SMALL_STEREO: dict[str, tuple[int, ...]] = {"STEREO_CAMERAS": (2, 48, 64)}
CASES = [(net, sensors, kind) for net in NETWORKS for sensors in SPECS for kind in ("discrete", "continuous")]
_cache: dict[tuple[str, str, str], PolicyNetwork] = {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spec_for(net: str, sensors: str) -> dict[str, tuple[int, ...]]:
    return SMALL_STEREO if sensors == "stereo" and net != SHALLOW else SPECS[sensors]


def build(net: str, sensors: str, kind: str, seed: int = 0) -> PolicyNetwork:
    torch.manual_seed(seed)
    return PolicyNetwork(spec_for(net, sensors), net, DISCRETE if kind == "discrete" else CONTINUOUS)


def policy_for(net: str, sensors: str, kind: str) -> PolicyNetwork:
    key = (net, sensors, kind)
    if key not in _cache:
        _cache[key] = build(net, sensors, kind)
    return _cache[key]


def random_obs(spec: dict[str, tuple[int, ...]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
        if name in CAMERA_SENSORS
        else rng.uniform(0.15, 1.0, (batch, *shape)).astype(np.float32)
        for name, shape in spec.items()
    }


def to_torch(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in obs.items()}


@pytest.mark.parametrize(("net", "sensors", "kind"), CASES)
def test_forward_act_evaluate(net: str, sensors: str, kind: str) -> None:
    policy = policy_for(net, sensors, kind)
    obs = random_obs(policy.observation_spec, batch=3)

    # forward: distribution over 3 observations, value (B,)
    dist, value = policy(to_torch(obs))
    assert value.shape == (3,)
    if kind == "discrete":
        assert dist.logits.shape == (3, 5)
    else:
        assert dist.mean.shape == (3, 2)

    # act: numpy out, env actions inside the action space
    torch.manual_seed(1)
    result = policy.act(obs)
    assert result.log_prob.shape == result.value.shape == result.steering_deg.shape == result.speed.shape == (3,)
    assert result.log_prob.dtype == result.value.dtype == np.float32
    assert result.steering_deg.dtype == result.speed.dtype == np.float64  # the metadata's numbers, not float32's
    assert np.isfinite(result.log_prob).all() and np.isfinite(result.value).all()
    np.testing.assert_allclose(result.value, value.detach().numpy(), rtol=1e-5, atol=1e-6)
    if kind == "discrete":
        assert result.action.shape == (3,) and result.action.dtype == np.int64
        chosen = [DISCRETE.discrete_actions[i] for i in result.action.tolist()]
        assert result.steering_deg.tolist() == [steer for steer, _ in chosen]  # exactly, e.g. 0.8 == 0.8
        assert result.speed.tolist() == [speed for _, speed in chosen]
    else:
        assert result.action.shape == (3, 2) and result.action.dtype == np.float32
        assert ((result.steering_deg >= -25.0) & (result.steering_deg <= 20.0)).all()
        assert ((result.speed >= 1.0) & (result.speed <= 2.5)).all()

    # evaluate: the trainer sees the same log-probs for the same actions
    log_prob, entropy, value2 = policy.evaluate(to_torch(obs), torch.from_numpy(result.action))
    np.testing.assert_allclose(log_prob.detach().numpy(), result.log_prob, rtol=1e-5, atol=1e-5)
    assert entropy.shape == value2.shape == (3,)

    # deterministic: the greedy action / the mean
    greedy = policy.act(obs, deterministic=True)
    if kind == "discrete":
        np.testing.assert_array_equal(greedy.action, dist.logits.argmax(-1).numpy())
    else:
        np.testing.assert_allclose(greedy.action, dist.mean.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(policy.value(obs), result.value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("net", "sensors", "kind"), CASES)
def test_weights_roundtrip_is_exact(net: str, sensors: str, kind: str) -> None:
    source = policy_for(net, sensors, kind)
    target = copy.deepcopy(source)
    with torch.no_grad():
        for param in target.parameters():
            param.add_(torch.randn_like(param))
    data = state_to_bytes(source)
    load_state_from_bytes(target, data)
    for (name, a), (name_b, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert name == name_b and a.dtype == b.dtype and torch.equal(a, b), name
    obs = random_obs(source.observation_spec, batch=2, seed=5)
    np.testing.assert_array_equal(source.act(obs, True).action, target.act(obs, True).action)
    assert state_to_bytes(target) == data


def test_full_size_images_give_deepracer_layer_shapes() -> None:
    full = observation_spec_for(["FRONT_FACING_CAMERA", "LIDAR"])
    shallow = PolicyNetwork({"FRONT_FACING_CAMERA": full["FRONT_FACING_CAMERA"]}, SHALLOW, DISCRETE)
    # 120x160 -> conv 8/4 -> 29x39 -> conv 4/2 -> 13x18 -> conv 3/1 -> 11x16, 64 filters
    middleware = shallow.policy_tower.middleware
    assert middleware[0].in_features == 64 * 11 * 16 and middleware[0].out_features == 512
    assert [m.out_channels for m in shallow.policy_tower.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 64]
    assert shallow.act(random_obs(shallow.observation_spec, batch=1)).action.shape == (1,)
    deep = PolicyNetwork(full, DEEP, CONTINUOUS)
    tower = deep.policy_tower
    assert [m.out_features for m in tower.middleware if isinstance(m, torch.nn.Linear)] == [256, 128]
    assert tower.middleware[0].in_features == 512 + 256  # camera dense [512, 512] + lidar [256, 256]
    assert tower.camera is not None and tower.camera.conv[-1].__class__ is torch.nn.Flatten
    deep_conv = policy_for(DEEP_CONV, "camera", "discrete").policy_tower
    assert deep_conv.camera is not None and deep_conv.camera.out_features == 64
    assert deep_conv.middleware[0].out_features == 512


def test_continuous_actions_map_affinely_and_clip() -> None:
    policy = policy_for(SHALLOW, "lidar", "continuous")
    steer, speed = policy.env_actions(np.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [3.0, -7.0]], np.float32))
    np.testing.assert_allclose(steer, [-25.0, -2.5, 20.0, 20.0])
    np.testing.assert_allclose(speed, [1.0, 1.75, 2.5, 1.0])
    # log-probs are those of the unclipped normalised sample
    obs = random_obs(policy.observation_spec, batch=1)
    dist, _ = policy(to_torch(obs))
    outside = torch.tensor([[1.7, -2.2]])
    log_prob, _, _ = policy.evaluate(to_torch(obs), outside)
    std = math.exp(networks.INITIAL_LOG_STD)
    expected = torch.distributions.Normal(dist.mean, std).log_prob(outside).sum(-1)
    torch.testing.assert_close(log_prob, expected)


def test_mismatched_weights_raise_clear_errors() -> None:
    shallow = policy_for(SHALLOW, "camera", "discrete")
    data = state_to_bytes(shallow)
    with pytest.raises(ModelFormatError, match=r"missing tensors .*policy_tower.camera.conv.6.*shape"):
        load_state_from_bytes(build(DEEP, "camera", "discrete"), data)
    with pytest.raises(ModelFormatError, match=r"shared trunk.*unexpected tensors value_tower"):
        load_state_from_bytes(PolicyNetwork(SPECS["camera"], SHALLOW, DISCRETE, shared_trunk=True), data)
    three_actions = ActionSpec("discrete", ((-10.0, 1.0), (0.0, 1.0), (10.0, 1.0)))
    with pytest.raises(ModelFormatError, match=r"policy_head.weight: shape \(5, 512\), expected \(3, 512\)"):
        load_state_from_bytes(PolicyNetwork(SPECS["camera"], SHALLOW, three_actions), data)
    with pytest.raises(ModelFormatError, match=r"policy_tower.middleware.0.weight: shape"):  # other image size
        load_state_from_bytes(PolicyNetwork({"FRONT_FACING_CAMERA": (96, 96)}, SHALLOW, DISCRETE), data)
    with pytest.raises(ModelFormatError, match="unexpected tensors log_std"):
        load_state_from_bytes(shallow, state_to_bytes(policy_for(SHALLOW, "camera", "continuous")))
    with pytest.raises(ModelFormatError, match="missing tensors policy_tower.lidar"):
        load_state_from_bytes(build(SHALLOW, "camera+lidar", "discrete"), data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 3, b"not a model at all", pickle.dumps({"a": 1}), b"\xff" * 8 + b"{}", None],
    ids=["empty", "short", "text", "pickle", "huge-header", "not-bytes"],
)
def test_corrupt_bytes_raise_model_format_error(data: bytes) -> None:
    policy = build(SHALLOW, "lidar", "discrete")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(ModelFormatError, match="safetensors|must be bytes"):
        load_state_from_bytes(policy, data)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_truncated_bad_dtype_nan_and_foreign_files_are_rejected_without_changing_the_module() -> None:
    policy = build(SHALLOW, "lidar", "discrete")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    good = state_to_bytes(build(SHALLOW, "lidar", "discrete", seed=9))
    with pytest.raises(ModelFormatError, match="not a valid safetensors"):
        load_state_from_bytes(policy, good[: len(good) // 2])
    as_double = {k: v.double() for k, v in before.items()}
    with pytest.raises(ModelFormatError, match="dtype torch.float64, expected torch.float32"):
        load_state_from_bytes(policy, safetensors.torch.save(as_double))
    with_nan = dict(before)
    with_nan["value_head.bias"] = torch.tensor([float("nan")])
    with pytest.raises(ModelFormatError, match="value_head.bias: contains NaN"):
        load_state_from_bytes(policy, safetensors.torch.save(with_nan))
    with pytest.raises(ModelFormatError, match="format 'something-else'"):
        load_state_from_bytes(policy, safetensors.torch.save(before, metadata={"format": "something-else"}))
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    # a plain safetensors file with the right tensors (no format tag) is accepted
    load_state_from_bytes(policy, safetensors.torch.save(dict(before)))


def test_nothing_uses_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    for module, name in [(pickle, "loads"), (pickle, "load"), (pickle, "dumps"), (pickle, "dump")]:
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch, "save", forbidden)
    policy = build(SHALLOW, "lidar", "continuous")
    data = state_to_bytes(policy)
    load_state_from_bytes(build(SHALLOW, "lidar", "continuous", seed=4), data)
    header_len = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and b"hotlap.policy_state/1" in data[8 : 8 + header_len]
    tree = ast.parse(inspect.getsource(networks))
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {"pickle", "dill", "cloudpickle", "joblib"} & imported
    torch_io = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("load", "save")
        and isinstance(node.value, ast.Name)
        and node.value.id == "torch"
    ]
    assert not torch_io, "torch.load/torch.save unpickle; weights must travel as safetensors"


def test_sensor_and_action_validation() -> None:
    with pytest.raises(ValueError, match="at most one camera"):
        PolicyNetwork({"FRONT_FACING_CAMERA": (120, 160), "LEFT_CAMERA": (120, 160)}, SHALLOW, DISCRETE)
    with pytest.raises(ValueError, match="at most one camera and at most one lidar"):
        PolicyNetwork({}, SHALLOW, DISCRETE)
    with pytest.raises(ValueError, match="unknown sensor"):
        PolicyNetwork({"RADAR": (4,)}, SHALLOW, DISCRETE)
    with pytest.raises(ValueError, match="unknown neural_network"):
        PolicyNetwork(SPECS["lidar"], "RESNET", DISCRETE)
    with pytest.raises(ValueError, match="too small"):
        PolicyNetwork({"FRONT_FACING_CAMERA": (20, 20)}, SHALLOW, DISCRETE)
    with pytest.raises(ValueError, match=r"\(2·stack, H, W\)"):
        PolicyNetwork({"STEREO_CAMERAS": (120, 160)}, SHALLOW, DISCRETE)
    with pytest.raises(ValueError, match="at least one action"):
        ActionSpec("discrete")
    with pytest.raises(ValueError, match="speed_range"):
        ActionSpec("continuous", speed_range=(2.0, 1.0))

    policy = policy_for(SHALLOW, "camera+lidar", "discrete")
    obs = random_obs(policy.observation_spec, batch=2)
    with pytest.raises(KeyError, match="LIDAR"):
        policy.act({"FRONT_FACING_CAMERA": obs["FRONT_FACING_CAMERA"]})
    with pytest.raises(ValueError, match="expected shape"):
        policy.act({**obs, "FRONT_FACING_CAMERA": obs["FRONT_FACING_CAMERA"][0]})


def test_specs_from_model_metadata() -> None:
    discrete = {
        "action_space": [{"steering_angle": -30, "speed": 0.6, "index": 0}, {"steering_angle": 30, "speed": 0.6}],
        "sensor": ["FRONT_FACING_CAMERA"],
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
        "version": "5",
    }
    assert ActionSpec.from_model_metadata(discrete) == ActionSpec("discrete", ((-30.0, 0.6), (30.0, 0.6)))
    continuous = {
        "action_space": {"speed": {"high": 2, "low": 1}, "steering_angle": {"high": 30, "low": -30}},
        "action_space_type": " Continuous ",
    }
    assert ActionSpec.from_model_metadata(continuous) == ActionSpec("continuous", (), (-30, 30), (1, 2))
    with pytest.raises(ValueError, match="no action space"):
        ActionSpec.from_model_metadata({})
    assert observation_spec_for(["STEREO_CAMERAS", "LIDAR"]) == {"STEREO_CAMERAS": (2, 120, 160), "LIDAR": (64,)}
    assert observation_spec_for(["FRONT_FACING_CAMERA", "SECTOR_LIDAR"])["SECTOR_LIDAR"] == (8,)
    lidar_config = {"num_sectors": 4, "num_values_per_sector": 2}
    assert observation_spec_for(["DISCRETIZED_SECTOR_LIDAR"], lidar_config) == {"DISCRETIZED_SECTOR_LIDAR": (8,)}


@pytest.mark.parametrize("net", NETWORKS)
def test_a_car_s_output_does_not_depend_on_the_rest_of_the_batch(net: str) -> None:
    policy = policy_for(net, "camera+lidar", "discrete")
    obs = random_obs(policy.observation_spec, batch=4, seed=2)
    batched = policy.act(obs, deterministic=True)
    policy.train()  # no BatchNorm/dropout: train and eval mode give the same numbers
    for i in range(4):
        single = policy.act({k: v[i : i + 1] for k, v in obs.items()}, deterministic=True)
        np.testing.assert_allclose(single.log_prob, batched.log_prob[i : i + 1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(single.value, batched.value[i : i + 1], rtol=1e-4, atol=1e-5)
    policy.eval()


# ---------------------------------------------------------------------------------------------------------
# Networks as DeepRacer builds them (issue 6 item 10)
# ---------------------------------------------------------------------------------------------------------

# DeepRacer's schemes (simapp sensors/utils.py; deepracer-formats.md §2): (filters, kernel, stride) per conv,
# then the camera's dense layers, then the middleware; a ReLU after every one of them and nothing else.
SHALLOW_CONVS = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
STEREO_DEEP_CONVS = [(32, 3, 1), (64, 3, 2), (64, 3, 1), (128, 3, 2), (128, 3, 1)]
DEEPRACER_LAYERS = {
    (SHALLOW, "camera"): (SHALLOW_CONVS, [], [512]),
    (DEEP_CONV, "camera"): ([(32, 5, 2), (32, 3, 1), (64, 3, 2), (64, 3, 1)], [64], [512]),
    (DEEP, "camera"): ([(32, 8, 4), (32, 4, 2), (64, 4, 2), (64, 3, 1)], [512, 512], [256, 128]),
    (SHALLOW, "stereo"): (SHALLOW_CONVS, [], [512]),
    (DEEP_CONV, "stereo"): (STEREO_DEEP_CONVS, [], [512]),
    (DEEP, "stereo"): (STEREO_DEEP_CONVS, [], [256, 128]),
}
NOT_IN_DEEPRACER = (torch.nn.Tanh, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.Dropout,
                    torch.nn.modules.batchnorm._BatchNorm)


def _dense_widths(stack: torch.nn.Sequential) -> list[int]:
    """Widths of a [Linear, ReLU]* stack, checking that exactly that alternation is what it holds."""
    kinds = [type(m) for m in stack]
    assert kinds == [torch.nn.Linear, torch.nn.ReLU] * (len(kinds) // 2), kinds
    return [m.out_features for m in stack if isinstance(m, torch.nn.Linear)]


def _tower_layers(tower: networks.Tower) -> tuple[list[tuple[int, int, int]], list[int], list[int], list[int]]:
    convs: list[tuple[int, int, int]] = []
    camera_dense: list[int] = []
    if tower.camera is not None:
        kinds = [type(m) for m in tower.camera.conv]
        assert kinds == [torch.nn.Conv2d, torch.nn.ReLU] * (len(kinds) // 2) + [torch.nn.Flatten], kinds
        convs = [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in tower.camera.conv
                 if isinstance(m, torch.nn.Conv2d)]
        camera_dense = _dense_widths(tower.camera.dense)
    lidar = _dense_widths(tower.lidar) if tower.lidar is not None else []
    return convs, camera_dense, lidar, _dense_widths(tower.middleware)


@pytest.mark.parametrize("sensors", list(SPECS))
@pytest.mark.parametrize("net", NETWORKS)
def test_layers_are_deepracer_s_with_relu_after_every_layer_and_no_tanh_or_normalisation(net: str, sensors: str):
    policy = build(net, sensors, "discrete")
    assert not [m for m in policy.modules() if isinstance(m, NOT_IN_DEEPRACER)]
    camera = "stereo" if "STEREO_CAMERAS" in SPECS[sensors] else "camera"
    convs, camera_dense, middleware = DEEPRACER_LAYERS[(net, camera)]
    if sensors == "lidar":
        convs, camera_dense = [], []
    lidar = [256, 256] if sensors in ("camera+lidar", "lidar") else []
    assert policy.value_tower is not None
    for tower in (policy.policy_tower, policy.value_tower):
        assert _tower_layers(tower) == (convs, camera_dense, lidar, middleware)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_policy_and_value_are_separate_networks_by_default(kind: str) -> None:
    policy = build(SHALLOW, "camera+lidar", kind)
    actor = {id(p) for m in (policy.policy_tower, policy.policy_head) for p in m.parameters()}
    if policy.log_std is not None:
        actor.add(id(policy.log_std))
    assert policy.value_tower is not None
    critic = {id(p) for m in (policy.value_tower, policy.value_head) for p in m.parameters()}
    assert not actor & critic
    assert actor | critic == {id(p) for p in policy.parameters()}
    # and no gradient crosses between them
    obs = to_torch(random_obs(policy.observation_spec, batch=3))
    actions = torch.zeros(3, dtype=torch.int64) if kind == "discrete" else torch.zeros(3, 2)
    log_prob, _, value = policy.evaluate(obs, actions)
    value.sum().backward()
    assert all(p.grad is None for p in policy.parameters() if id(p) in actor)
    policy.zero_grad(set_to_none=True)
    log_prob.sum().backward()
    assert all(p.grad is None for p in policy.parameters() if id(p) in critic)


def test_shared_trunk_is_an_option_with_both_heads_on_one_tower() -> None:
    shared = PolicyNetwork(SPECS["camera"], SHALLOW, DISCRETE, shared_trunk=True)
    separate = build(SHALLOW, "camera", "discrete")
    assert shared.value_tower is None
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in separate.parameters())
    obs = random_obs(shared.observation_spec, batch=2)
    _, value = shared(to_torch(obs))
    value.sum().backward()
    assert all(p.grad is not None for p in shared.policy_tower.parameters())
    np.testing.assert_allclose(shared.value(obs), shared.act(obs).value, rtol=1e-5, atol=1e-6)


def test_continuous_log_std_starts_at_deepracer_s_zero_and_is_clamped() -> None:
    policy = build(SHALLOW, "lidar", "continuous")
    assert policy.log_std is not None
    assert torch.equal(policy.log_std.detach(), torch.zeros(2))  # rl_coach: policy_log_std = zeros
    obs = to_torch(random_obs(policy.observation_spec, batch=2))
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([5.0, -30.0]))
    dist, _ = policy(obs)
    expected = torch.tensor([math.exp(3.0), math.exp(-20.0)]).expand(2, 2)
    torch.testing.assert_close(dist.base_dist.scale, expected)  # clamped to [-20, 3] as DeepRacer does
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([0.5, -1.0]))
    dist, _ = policy(obs)
    torch.testing.assert_close(dist.base_dist.scale, torch.tensor([math.exp(0.5), math.exp(-1.0)]).expand(2, 2))


# ---------------------------------------------------------------------------------------------------------
# e-greedy action choice (issue 6 item 9)
# ---------------------------------------------------------------------------------------------------------


def _confident(kind: str = "discrete") -> PolicyNetwork:
    """A policy that puts ~all probability on action 3 whatever it sees."""
    policy = build(SHALLOW, "lidar", kind)
    with torch.no_grad():
        policy.policy_head.weight.zero_()
        policy.policy_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 20.0, 0.0]))
    return policy


def test_e_greedy_explores_uniformly_with_epsilon_and_is_greedy_without() -> None:
    policy = _confident()
    obs = random_obs(policy.observation_spec, batch=2000, seed=3)
    torch.manual_seed(0)
    sampled = policy.act(obs)
    assert (sampled.action == 3).mean() > 0.99  # the categorical policy barely explores
    explored = policy.act(obs, epsilon=np.ones(2000))
    counts = np.bincount(explored.action, minlength=5)
    assert counts.min() > 300 and counts.max() < 500  # uniform over the 5 actions (400 expected)
    greedy = policy.act(obs, epsilon=np.zeros(2000))
    assert (greedy.action == 3).all()
    # per-car epsilon: cars 0..999 explore, 1000..1999 are greedy
    mixed = policy.act(obs, epsilon=np.r_[np.ones(1000), np.zeros(1000)])
    assert (mixed.action[1000:] == 3).all() and (mixed.action[:1000] != 3).sum() > 700


def test_e_greedy_records_the_policy_s_log_probability_of_the_chosen_action() -> None:
    policy = _confident()
    obs = random_obs(policy.observation_spec, batch=50, seed=4)
    result = policy.act(obs, epsilon=np.full(50, 0.5))
    log_prob, _, value = policy.evaluate(to_torch(obs), torch.from_numpy(result.action))
    np.testing.assert_allclose(result.log_prob, log_prob.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.value, value.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_e_greedy_leaves_continuous_actions_to_the_policy() -> None:
    policy = build(SHALLOW, "lidar", "continuous")
    obs = random_obs(policy.observation_spec, batch=4)
    torch.manual_seed(1)
    plain = policy.act(obs)
    torch.manual_seed(1)
    with_epsilon = policy.act(obs, epsilon=np.ones(4))
    np.testing.assert_array_equal(plain.action, with_epsilon.action)


def test_a_version_s_manifest_is_checked_against_the_network_before_loading() -> None:
    policy = build(SHALLOW, "camera", "discrete")
    manifest = json.loads(json.dumps(networks.architecture(policy)))  # as stored
    assert manifest == {"network": SHALLOW, "shared_trunk": False,
                        "observation_spec": {"FRONT_FACING_CAMERA": [84, 96]}, "action_space_type": "discrete"}
    networks.check_architecture(policy, manifest, "s3://b/p/model/3")
    for change in ({"shared_trunk": True}, {"network": DEEP}, {"observation_spec": {"LIDAR": [64]}}):
        with pytest.raises(ModelFormatError, match=r"s3://b/p/model/3 was trained with another network: "
                                                   + next(iter(change))):
            networks.check_architecture(policy, {**manifest, **change}, "s3://b/p/model/3")
    old = {k: v for k, v in manifest.items() if k != "shared_trunk"}  # written before issue 6
    with pytest.raises(ModelFormatError, match="shared_trunk None, this run builds False"):
        networks.check_architecture(policy, old, "model/3")
