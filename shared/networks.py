"""The policy/value network: the model contract shared by simulator workers and the trainer.

Both sides build the same :class:`PolicyNetwork` from the same ``model_metadata.json`` facts
(sensors, neural network name, action space); weights travel between them as safetensors bytes
(:func:`state_to_bytes` / :func:`load_state_from_bytes`), never as pickle.

Layer shapes follow DeepRacer's (simapp ``sensors/utils.py``, ``architecture/custom_architectures.py``,
``agents/utils.py::get_network_settings``; deepracer-formats.md §2):

==========================================  ==============================================  ===========
network                                      camera embedder (filters, kernel, stride)        middleware
==========================================  ==============================================  ===========
DEEP_CONVOLUTIONAL_NETWORK_SHALLOW (default) conv [32,8,4] [64,4,2] [64,3,1]                  dense 512
DEEP_CONVOLUTIONAL_NETWORK                   conv [32,5,2] [32,3,1] [64,3,2] [64,3,1], dense 64 dense 512
DEEP_CONVOLUTIONAL_NETWORK_DEEP              conv [32,8,4] [32,4,2] [64,4,2] [64,3,1],        dense 256,128
                                             dense 512,512
==========================================  ==============================================  ===========

DeepRacer builds every network with ``embedder_type = SCHEME`` and ``activation_function = relu``:
rl_coach's embedder puts a ReLU after *every* layer of the scheme and nothing else. The tanh, batch-norm
and dropout entries in simapp's scheme tables belong to its ``BN_SCHEME``, which DeepRacer does not use;
so no network here has tanh, normalisation or dropout. ``STEREO_CAMERAS`` (2 channels) uses the SHALLOW
convs for SHALLOW and DeepRacer's stereo stack [32,3,1] [64,3,2] [64,3,1] [128,3,2] [128,3,1] for the two
deeper networks. A lidar sensor goes through a dense [256, 256] branch whose output is concatenated
with the camera embedding before the middleware.

Policy and value are **separate networks**, as DeepRacer's clipped PPO builds them (rl_coach
``use_separate_networks_per_head = True``: ``network_0`` = value, ``network_1`` = policy, each with its own
embedders and middleware). ``shared_trunk=True`` (hyperparameters.json ``hotlap_shared_trunk``, a hotlap
extension) puts both heads on one trunk instead: about half the compute, not DeepRacer's.

Camera pixels arrive as uint8 (any dtype is accepted) and are scaled by 1/255; lidar arrives as
float32 and is used as is. Continuous actions are a diagonal Gaussian with a learned state-independent
log-std in a normalised [-1, 1] space per dimension (steering, speed), initialised to 0 (std 1) and
clamped to [-20, 3] before ``exp`` as DeepRacer's patched rl_coach ``ppo_head.py`` does; the env action
is the affine map of the sample onto the metadata ranges, clipped to the range. Log-probabilities and
entropies are always those of the unclipped normalised sample, so the worker's and the trainer's
numbers agree.

Only torch, numpy and safetensors are imported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

# ---------------------------------------------------------------------------------------------------------
# Names and constants
# ---------------------------------------------------------------------------------------------------------

SHALLOW = "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"
DEEP_CONV = "DEEP_CONVOLUTIONAL_NETWORK"
DEEP = "DEEP_CONVOLUTIONAL_NETWORK_DEEP"
NETWORKS: tuple[str, ...] = (SHALLOW, DEEP_CONV, DEEP)
DEFAULT_NETWORK = SHALLOW

STEREO_CAMERA = "STEREO_CAMERAS"
CAMERA_SENSORS: tuple[str, ...] = ("FRONT_FACING_CAMERA", "LEFT_CAMERA", STEREO_CAMERA, "observation")
LIDAR_SENSORS: tuple[str, ...] = ("LIDAR", "SECTOR_LIDAR", "DISCRETIZED_SECTOR_LIDAR")

IMAGE_HEIGHT, IMAGE_WIDTH = 120, 160  # DeepRacer TRAINING_IMAGE_SIZE = (160, 120), grayscale
LIDAR_SIZE = 64  # TRAINING_LIDAR_SIZE
SECTOR_LIDAR_SIZE = 8  # NUMBER_OF_LIDAR_SECTORS

INITIAL_LOG_STD = 0.0
"""Initial per-dimension log-std of the continuous policy: DeepRacer's rl_coach PPO head starts
``policy_log_std`` at zeros (std 1 in the normalised [-1, 1] action space)."""
LOG_STD_MIN, LOG_STD_MAX = -20.0, 3.0
"""DeepRacer clamps the log-std to this range before ``exp`` (simapp ``rl_coach.patch``, ppo_head.py)."""

POLICY_HEAD_GAIN = 0.01  # CleanRL: small policy-head init -> near-uniform / near-zero-mean start
VALUE_HEAD_GAIN = 1.0

_FORMAT_KEY, _FORMAT_VALUE = "format", "hotlap.policy_state/1"

# (filters, kernel, stride) per conv layer
_ConvSpec = tuple[tuple[int, int, int], ...]
_SHALLOW_CONVS: _ConvSpec = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
_DEEP_CONV_CONVS: _ConvSpec = ((32, 5, 2), (32, 3, 1), (64, 3, 2), (64, 3, 1))
_DEEP_CONVS: _ConvSpec = ((32, 8, 4), (32, 4, 2), (64, 4, 2), (64, 3, 1))
_STEREO_DEEP_CONVS: _ConvSpec = ((32, 3, 1), (64, 3, 2), (64, 3, 1), (128, 3, 2), (128, 3, 1))
_LIDAR_DENSE = (256, 256)


@dataclass(frozen=True)
class _Topology:
    convs: _ConvSpec
    conv_dense: tuple[int, ...]  # dense layers after the flattened convs (camera branch)
    middleware: tuple[int, ...]


def _topology(network: str, stereo: bool) -> _Topology:
    if network == SHALLOW:
        return _Topology(_SHALLOW_CONVS, (), (512,))
    if network == DEEP_CONV:
        return _Topology(_STEREO_DEEP_CONVS, (), (512,)) if stereo else _Topology(_DEEP_CONV_CONVS, (64,), (512,))
    if network == DEEP:
        if stereo:
            return _Topology(_STEREO_DEEP_CONVS, (), (256, 128))
        return _Topology(_DEEP_CONVS, (512, 512), (256, 128))
    raise ValueError(f"unknown neural_network {network!r}; expected one of {', '.join(NETWORKS)}")


class ModelFormatError(ValueError):
    """Weights bytes that are not a valid safetensors file or do not fit the network."""


# ---------------------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """The action space of ``model_metadata.json``.

    Discrete: ``discrete_actions[i] = (steering_angle_deg, speed_mps)`` of action index ``i``.
    Continuous: ``steering_range`` and ``speed_range`` are ``(low, high)``; the policy acts in
    [-1, 1] per dimension, in the order (steering, speed).
    """

    kind: Literal["discrete", "continuous"]
    discrete_actions: tuple[tuple[float, float], ...] = ()
    steering_range: tuple[float, float] = (-30.0, 30.0)
    speed_range: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "continuous"):
            raise ValueError(f"action kind must be 'discrete' or 'continuous', got {self.kind!r}")
        actions = tuple((float(steer), float(speed)) for steer, speed in self.discrete_actions)
        object.__setattr__(self, "discrete_actions", actions)
        object.__setattr__(self, "steering_range", tuple(float(v) for v in self.steering_range))
        object.__setattr__(self, "speed_range", tuple(float(v) for v in self.speed_range))
        if self.kind == "discrete" and not actions:
            raise ValueError("a discrete action space needs at least one action")
        for name, (low, high) in (("steering_range", self.steering_range), ("speed_range", self.speed_range)):
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name} must be finite with low <= high, got ({low}, {high})")

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the number of continuous dimensions (2)."""
        return len(self.discrete_actions) if self.kind == "discrete" else 2

    @classmethod
    def from_model_metadata(cls, metadata: Mapping[str, Any]) -> ActionSpec:
        """Build from a parsed ``model_metadata.json`` (keys ``action_space``, ``action_space_type``)."""
        if "action_space" not in metadata:
            raise ValueError("no action space defined (model_metadata has no 'action_space')")
        space = metadata["action_space"]
        kind = str(metadata.get("action_space_type", "discrete")).strip().lower()
        if kind == "discrete":
            return cls("discrete", tuple((a["steering_angle"], a["speed"]) for a in space))
        if kind == "continuous":
            steer, speed = space["steering_angle"], space["speed"]
            return cls("continuous", (), (steer["low"], steer["high"]), (speed["low"], speed["high"]))
        raise ValueError(f"action_space_type must be 'discrete' or 'continuous', got {kind!r}")


def observation_spec_for(
    sensors: Iterable[str], lidar_config: Mapping[str, Any] | None = None
) -> dict[str, tuple[int, ...]]:
    """DeepRacer's observation shape per sensor name (``model_metadata['sensor']``)."""
    spec: dict[str, tuple[int, ...]] = {}
    for sensor in sensors:
        if sensor == STEREO_CAMERA:
            spec[sensor] = (2, IMAGE_HEIGHT, IMAGE_WIDTH)
        elif sensor in CAMERA_SENSORS:
            spec[sensor] = (IMAGE_HEIGHT, IMAGE_WIDTH)
        elif sensor == "LIDAR":
            spec[sensor] = (LIDAR_SIZE,)
        elif sensor == "SECTOR_LIDAR":
            spec[sensor] = (SECTOR_LIDAR_SIZE,)
        elif sensor == "DISCRETIZED_SECTOR_LIDAR":
            cfg = lidar_config or {}
            spec[sensor] = (int(cfg.get("num_sectors", 8)) * int(cfg.get("num_values_per_sector", 8)),)
        else:
            raise ValueError(f"unknown sensor {sensor!r}; expected one of {CAMERA_SENSORS + LIDAR_SENSORS}")
    return spec


def _split_sensors(observation_spec: Mapping[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
    """Return (camera sensor, lidar sensor) after checking DeepRacer's one-camera/one-lidar rule."""
    unknown = [s for s in observation_spec if s not in CAMERA_SENSORS + LIDAR_SENSORS]
    if unknown:
        raise ValueError(f"unknown sensor(s) {unknown}; expected names from {CAMERA_SENSORS + LIDAR_SENSORS}")
    cameras = [s for s in observation_spec if s in CAMERA_SENSORS]
    lidars = [s for s in observation_spec if s in LIDAR_SENSORS]
    if len(cameras) > 1 or len(lidars) > 1 or not (cameras or lidars):
        raise ValueError(
            f"need at most one camera and at most one lidar (and at least one sensor), got {list(observation_spec)}"
        )
    camera, lidar = (cameras[0] if cameras else None), (lidars[0] if lidars else None)
    if camera is not None:
        shape = tuple(observation_spec[camera])
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"camera {camera} shape must be (H, W) or (C, H, W), got {shape}")
        if camera == STEREO_CAMERA and (len(shape) != 3 or shape[0] % 2):
            raise ValueError(f"{STEREO_CAMERA} shape must be (2·stack, H, W), got {shape}")
    if lidar is not None:
        shape = tuple(observation_spec[lidar])
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"lidar {lidar} shape must be (N,), got {shape}")
    return camera, lidar


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


_LARGE_LAYER = 1 << 22  # weights; above this a QR-based orthogonal init takes seconds


def _init(layer: nn.Linear | nn.Conv2d, gain: float) -> None:
    """Orthogonal weights, zero bias (CleanRL's ``layer_init``).

    Very wide layers (the stereo networks' first dense layer has ~57M weights) get N(0, gain²/fan_in)
    instead: with fan_in >> fan_out its rows are orthogonal up to O(sqrt(fan_out/fan_in)) with norm
    ~gain, i.e. the same init in distribution, without a multi-second QR decomposition.
    """
    fan_out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
    if layer.weight.numel() > _LARGE_LAYER and fan_in >= 8 * fan_out:
        nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    else:
        nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


_RELU_GAIN = math.sqrt(2.0)


def _dense_stack(in_features: int, widths: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Dense layers, each followed by a ReLU (rl_coach's SCHEME embedder/middleware)."""
    layers: list[nn.Module] = []
    for width in widths:
        linear = nn.Linear(in_features, width)
        _init(linear, _RELU_GAIN)
        layers += [linear, nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers), in_features


class CameraEmbedder(nn.Module):
    """uint8 image(s) (B, H, W) or (B, C, H, W) -> (B, features)."""

    def __init__(self, shape: tuple[int, ...], topology: _Topology, name: str) -> None:
        super().__init__()
        channels = 1 if len(shape) == 2 else shape[0]
        height, width = shape[-2:]
        layers: list[nn.Module] = []
        in_channels = channels
        for filters, kernel, stride in topology.convs:
            conv = nn.Conv2d(in_channels, filters, kernel, stride)
            _init(conv, _RELU_GAIN)
            layers += [conv, nn.ReLU()]
            in_channels = filters
        layers.append(nn.Flatten())
        self.conv = nn.Sequential(*layers)
        try:
            with torch.no_grad():
                flat = self.conv(torch.zeros(1, channels, height, width)).shape[1]
        except RuntimeError as e:
            raise ValueError(f"camera image {height}x{width} is too small for {name}") from e
        self.dense, self.out_features = _dense_stack(flat, topology.conv_dense)

    def forward(self, image: Tensor) -> Tensor:
        x = image.float() * (1.0 / 255.0)
        if x.dim() == 3:  # (B, H, W) grayscale -> one channel
            x = x.unsqueeze(1)
        return self.dense(self.conv(x))


# ---------------------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActResult:
    """Batched output of :meth:`PolicyNetwork.act` (numpy, leading dimension B).

    ``action`` is what goes back to the trainer: the action index (int64) or the normalised-space
    Gaussian sample (B, 2) float32. ``steering_deg`` / ``speed`` are what goes to the car.
    """

    action: np.ndarray
    log_prob: np.ndarray
    value: np.ndarray
    steering_deg: np.ndarray
    speed: np.ndarray


class Tower(nn.Module):
    """One network of the actor-critic: sensor embedders -> concat -> middleware, (B, hidden)."""

    def __init__(self, observation_spec: Mapping[str, tuple[int, ...]], camera: str | None, lidar: str | None,
                 topology: _Topology, network: str) -> None:
        super().__init__()
        self.camera_sensor, self.lidar_sensor = camera, lidar
        features = 0
        self.camera: CameraEmbedder | None = None
        self.lidar: nn.Sequential | None = None
        if camera is not None:
            self.camera = CameraEmbedder(observation_spec[camera], topology, network)
            features += self.camera.out_features
        if lidar is not None:
            self.lidar, lidar_features = _dense_stack(observation_spec[lidar][0], _LIDAR_DENSE)
            features += lidar_features
        self.middleware, self.out_features = _dense_stack(features, topology.middleware)

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        parts = []
        if self.camera is not None:
            parts.append(self.camera(obs[self.camera_sensor]))  # type: ignore[index]
        if self.lidar is not None:
            parts.append(self.lidar(obs[self.lidar_sensor].float()))  # type: ignore[index]
        return self.middleware(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


class PolicyNetwork(nn.Module):
    """DeepRacer's clipped-PPO actor-critic: a policy network and a separate value network.

    ``policy_tower`` + ``policy_head`` give the action distribution, ``value_tower`` + ``value_head`` the
    state value; the two share no parameters (DeepRacer's ``use_separate_networks_per_head``). With
    ``shared_trunk=True`` (hotlap extension) ``value_tower`` is None and both heads sit on the policy tower.
    """

    def __init__(
        self,
        observation_spec: Mapping[str, tuple[int, ...]],
        network: str,
        action_spec: ActionSpec,
        shared_trunk: bool = False,
    ) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ValueError(f"unknown neural_network {network!r}; expected one of {', '.join(NETWORKS)}")
        self.observation_spec = {name: tuple(int(d) for d in dims) for name, dims in observation_spec.items()}
        self.network = network
        self.action_spec = action_spec
        self.shared_trunk = shared_trunk
        self.camera_sensor, self.lidar_sensor = _split_sensors(self.observation_spec)
        topology = _topology(network, stereo=self.camera_sensor == STEREO_CAMERA)

        def tower() -> Tower:
            return Tower(self.observation_spec, self.camera_sensor, self.lidar_sensor, topology, network)

        self.policy_tower = tower()
        self.value_tower: Tower | None = None if shared_trunk else tower()
        hidden = self.policy_tower.out_features
        self.policy_head = nn.Linear(hidden, action_spec.num_actions)
        _init(self.policy_head, POLICY_HEAD_GAIN)
        self.value_head = nn.Linear(hidden, 1)
        _init(self.value_head, VALUE_HEAD_GAIN)
        self.log_std: nn.Parameter | None = None
        if action_spec.kind == "continuous":
            self.log_std = nn.Parameter(torch.full((2,), INITIAL_LOG_STD))

        # env-action lookup (not part of the weights)
        # float64: the car gets the metadata's numbers exactly (a JSON 0.8 stays 0.8, never float32's 0.800000011920929)
        self._action_table = np.asarray(action_spec.discrete_actions, dtype=np.float64).reshape(-1, 2)
        self._range_low = np.array([action_spec.steering_range[0], action_spec.speed_range[0]], np.float64)
        self._range_high = np.array([action_spec.steering_range[1], action_spec.speed_range[1]], np.float64)

    # -- torch API (trainer) ---------------------------------------------------------------------------

    def _checked(self, obs: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        for sensor in (self.camera_sensor, self.lidar_sensor):
            if sensor is None:
                continue
            if sensor not in obs:
                raise KeyError(f"observation is missing sensor {sensor!r} (has {sorted(obs)})")
            expected = self.observation_spec[sensor]
            if tuple(obs[sensor].shape[1:]) != expected:
                raise ValueError(f"sensor {sensor}: expected shape (B, *{expected}), got {tuple(obs[sensor].shape)}")
        return obs

    def _distribution(self, hidden: Tensor) -> Distribution:
        out = self.policy_head(hidden)
        if self.log_std is None:
            return Categorical(logits=out, validate_args=False)
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp().expand_as(out)
        return Independent(Normal(out, std, validate_args=False), 1, validate_args=False)

    def _value(self, obs: Mapping[str, Tensor], policy_hidden: Tensor | None = None) -> Tensor:
        if self.value_tower is None:
            hidden = self.policy_tower(obs) if policy_hidden is None else policy_hidden
        else:
            hidden = self.value_tower(obs)
        return self.value_head(hidden).squeeze(-1)

    def forward(self, obs: Mapping[str, Tensor]) -> tuple[Distribution, Tensor]:
        """Policy distribution over (normalised) actions and state value (B,)."""
        obs = self._checked(obs)
        hidden = self.policy_tower(obs)
        return self._distribution(hidden), self._value(obs, hidden)

    def evaluate(self, obs: Mapping[str, Tensor], actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log_prob(actions), entropy, value — each (B,). The trainer's view of the same policy."""
        dist, value = self(obs)
        return dist.log_prob(actions), dist.entropy(), value

    # -- numpy API (workers) ---------------------------------------------------------------------------

    def _to_tensors(self, obs: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        device = self.policy_head.weight.device
        sensors = [s for s in (self.camera_sensor, self.lidar_sensor) if s is not None]
        missing = [s for s in sensors if s not in obs]
        if missing:
            raise KeyError(f"observation is missing sensor(s) {missing} (has {sorted(obs)})")
        tensors = {}
        for sensor in sensors:
            array = np.asarray(obs[sensor])
            if not array.flags.writeable:  # torch.from_numpy wants writable memory; frames are small
                array = array.copy()
            tensors[sensor] = torch.from_numpy(array).to(device)
        return tensors

    @torch.no_grad()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False,
            epsilon: np.ndarray | None = None) -> ActResult:
        """Choose actions for a batch of observations (numpy in, numpy out).

        ``deterministic`` picks the most likely action (discrete) or the mean (continuous), as
        DeepRacer's evaluation does; otherwise the action is sampled from the policy.

        ``epsilon`` (B,) switches discrete actions to DeepRacer's e-greedy exploration (rl_coach
        ``EGreedy``; hyperparameters.json ``exploration_type: "e-greedy"``, deepracer-formats.md §3.1):
        with probability ``epsilon[i]`` a uniformly random action, else the most likely one. It has
        no effect on continuous actions (DeepRacer explores those with additive noise either way).
        ``log_prob`` is always the policy's log-probability of the chosen action: rl_coach's clipped
        PPO takes the "old" probabilities from the policy that acted (its target network), not from
        the exploration rule, and so does the trainer here.
        """
        dist, value = self(self._to_tensors(obs))
        if isinstance(dist, Categorical):
            greedy = dist.logits.argmax(dim=-1)
            if deterministic:
                action = greedy
            elif epsilon is not None:
                explore = torch.rand(greedy.shape, device=greedy.device) < torch.as_tensor(
                    np.asarray(epsilon, np.float32), device=greedy.device)
                uniform = torch.randint(self.action_spec.num_actions, greedy.shape, device=greedy.device)
                action = torch.where(explore, uniform, greedy)
            else:
                action = dist.sample()
        else:
            action = dist.mean if deterministic else dist.sample()
        log_prob = dist.log_prob(action).float().cpu().numpy()
        action_np = action.cpu().numpy()
        steering, speed = self.env_actions(action_np)
        if self.action_spec.kind == "discrete":
            action_np = action_np.astype(np.int64, copy=False)
        else:
            action_np = action_np.astype(np.float32, copy=False)
        return ActResult(action_np, log_prob, value.float().cpu().numpy(), steering, speed)

    @torch.no_grad()
    def value(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """State values (B,) float32, e.g. the bootstrap value of a truncated episode."""
        return self._value(self._checked(self._to_tensors(obs))).float().cpu().numpy()

    def env_actions(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy actions -> (steering_deg, speed) float64 arrays, clipped to the action space.

        Discrete: the metadata's numbers exactly; continuous: the float32 sample scaled in float64
        onto [low, high] (DeepRacer's params carry these values, deepracer-formats.md §1.1).
        """
        if self.action_spec.kind == "discrete":
            pairs = self._action_table[np.asarray(actions, dtype=np.int64)]
        else:
            unit = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
            pairs = self._range_low + (unit + 1.0) * 0.5 * (self._range_high - self._range_low)
            pairs = np.clip(pairs, self._range_low, self._range_high)
        return pairs[..., 0].copy(), pairs[..., 1].copy()


def architecture(policy: PolicyNetwork) -> dict[str, Any]:
    """What a version's manifest records about the network that wrote its weights (JSON-ready)."""
    return {
        "network": policy.network,
        "shared_trunk": policy.shared_trunk,
        "observation_spec": {name: list(shape) for name, shape in policy.observation_spec.items()},
        "action_space_type": policy.action_spec.kind,
    }


def check_architecture(policy: PolicyNetwork, manifest: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ModelFormatError` naming ``source`` and every field in which the manifest's
    network differs from ``policy`` (checked before loading a version's weights)."""
    problems = [f"{key} {manifest.get(key)!r}, this run builds {value!r}"
                for key, value in architecture(policy).items() if manifest.get(key) != value]
    if problems:
        raise ModelFormatError(f"{source} was trained with another network: " + "; ".join(problems)
                               + " (a version trained before hotlap built DeepRacer's networks does not load)")


# ---------------------------------------------------------------------------------------------------------
# Weights as safetensors bytes
# ---------------------------------------------------------------------------------------------------------


def state_to_bytes(module: nn.Module) -> bytes:
    """Serialise ``module.state_dict()`` to safetensors bytes (CPU, contiguous)."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in module.state_dict().items()}
    return save_safetensors(tensors, metadata={_FORMAT_KEY: _FORMAT_VALUE})


def load_state_from_bytes(module: nn.Module, data: bytes) -> None:
    """Load safetensors bytes into ``module``; all-or-nothing.

    Raises :class:`ModelFormatError` (a ``ValueError``) when the bytes are not safetensors, carry another
    format tag, or do not match the module's tensor names, shapes and dtypes, or hold non-finite values.
    The module is left untouched in that case.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFormatError(f"model weights must be bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        tensors = load_safetensors(data)
        metadata = _read_metadata(data)
    except Exception as e:  # the parser's own errors vary by version; wrap them all
        raise ModelFormatError(f"model weights are not a valid safetensors file ({len(data)} B): {e}") from e
    fmt = metadata.get(_FORMAT_KEY)
    if fmt is not None and fmt != _FORMAT_VALUE:
        raise ModelFormatError(f"model weights have format {fmt!r}, expected {_FORMAT_VALUE!r}")

    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensors {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_short(unexpected)}")
    for name in sorted(set(expected) & set(tensors)):
        want, got = expected[name], tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        elif got.dtype != want.dtype:
            problems.append(f"{name}: dtype {got.dtype}, expected {want.dtype}")
        elif got.is_floating_point() and not bool(torch.isfinite(got).all()):
            problems.append(f"{name}: contains NaN or inf")
    if problems:
        raise ModelFormatError(
            f"model weights do not match this {type(module).__name__}"
            f"{_describe(module)}: " + "; ".join(problems[:8]) + (" ..." if len(problems) > 8 else "")
        )
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (the header is little-endian u64 length + JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _short(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _describe(module: nn.Module) -> str:
    if isinstance(module, PolicyNetwork):
        spec = module.action_spec
        trunk = ", shared trunk" if module.shared_trunk else ""
        return f" ({module.network}{trunk}, sensors {list(module.observation_spec)}, {spec.kind} actions)"
    return ""
