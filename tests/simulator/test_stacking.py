import numpy as np
import pytest

from shared.config import observation_shapes
from shared.networks import ActionSpec, PolicyNetwork
from simulator.stacking import ObservationStack

SENSORS = {"FRONT_FACING_CAMERA": (120, 160), "STEREO_CAMERAS": (2, 120, 160), "LIDAR": (64,)}
EVERY_SENSOR = {**SENSORS, "SECTOR_LIDAR": (8,), "DISCRETIZED_SECTOR_LIDAR": (64,)}


def frame(value: int, shape: tuple[int, ...], cars: int = 3) -> np.ndarray:
    return np.full((cars, *shape), value, np.uint8 if len(shape) > 1 else np.float32)


@pytest.mark.parametrize("sensor", list(SENSORS))
def test_stacked_shapes_match_the_declared_contract(sensor):
    stack = ObservationStack(3)
    obs = stack.reset({sensor: frame(0, SENSORS[sensor])})
    assert obs[sensor].shape[1:] == observation_shapes([sensor], 3)[sensor]


def test_oldest_first_and_reset_only_touches_the_given_cars():
    shape = SENSORS["FRONT_FACING_CAMERA"]
    stack = ObservationStack(3)
    stack.reset({"FRONT_FACING_CAMERA": frame(1, shape)})
    stack.push({"FRONT_FACING_CAMERA": frame(2, shape)})
    obs = stack.push({"FRONT_FACING_CAMERA": frame(3, shape)})
    assert obs["FRONT_FACING_CAMERA"][0, :, 0, 0].tolist() == [1, 2, 3]
    obs = stack.reset({"FRONT_FACING_CAMERA": frame(9, shape)}, car_ids=np.array([1]))
    assert obs["FRONT_FACING_CAMERA"][1, :, 0, 0].tolist() == [9, 9, 9]
    assert obs["FRONT_FACING_CAMERA"][0, :, 0, 0].tolist() == [1, 2, 3]


def test_stack_of_one_is_the_plain_observation():
    obs = {"LIDAR": frame(1, (64,))}
    assert ObservationStack(1).reset(obs) is obs


def test_networks_accept_stacked_stereo_and_lidar():
    spec = observation_shapes(["STEREO_CAMERAS", "LIDAR"], 2)
    policy = PolicyNetwork(spec, "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", ActionSpec("discrete", ((0.0, 1.0),)))
    stack = ObservationStack(2)
    obs = stack.reset({"STEREO_CAMERAS": frame(5, SENSORS["STEREO_CAMERAS"], 2), "LIDAR": frame(1, (64,), 2)})
    assert policy.act(obs).action.shape == (2,)


@pytest.mark.parametrize("sensor", list(EVERY_SENSOR))
def test_stacks_handed_out_earlier_never_change(sensor):
    """Callers keep stacks across steps (episode buffers): a later push or reset must not rewrite them."""
    shape = EVERY_SENSOR[sensor]
    stack = ObservationStack(3)
    kept = [stack.reset({sensor: frame(0, shape)})[sensor]]
    for value in range(1, 6):
        kept.append(stack.push({sensor: frame(value, shape)})[sensor])
    kept.append(stack.reset({sensor: frame(9, shape)}, car_ids=np.array([1]))[sensor])
    history = [0, 0, 0, 1, 2, 3, 4, 5]  # what car 0 saw, oldest first
    for t, obs in enumerate(kept[:-1]):
        newest_three = history[t : t + 3]
        per_entry = obs[0].reshape(3, -1)[:, 0]  # the first value of each stacked observation
        assert per_entry.tolist() == newest_three, (sensor, t)
        assert not obs.flags.writeable
    assert kept[-1][1].reshape(3, -1)[:, 0].tolist() == [9, 9, 9]
