import numpy as np
import pytest

from shared.config import observation_shapes
from shared.networks import ActionSpec, PolicyNetwork
from simulator.stacking import ObservationStack

SENSORS = {"FRONT_FACING_CAMERA": (120, 160), "STEREO_CAMERAS": (2, 120, 160), "LIDAR": (64,)}


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
