"""Waypoint-heading reward in the community's style (bench/learn.py): point the car along the track.

The direction of the track is the line from the previous to the next of ``closest_waypoints``; the
reward is 1 when ``heading`` matches it and halves once the difference passes 10 degrees, with the
usual "all wheels on track" guard. Params: deepracer-formats.md §1 (``waypoints``,
``closest_waypoints``, ``heading`` in degrees, -180..180).
"""

import math

DIRECTION_THRESHOLD_DEG = 10.0
OFF_TRACK = 1e-3


def reward_function(params):
    if params["is_offtrack"] or not params["all_wheels_on_track"]:
        return OFF_TRACK
    waypoints = params["waypoints"]
    previous_index, next_index = params["closest_waypoints"]
    previous_point, next_point = waypoints[previous_index], waypoints[next_index]
    track_direction = math.degrees(math.atan2(next_point[1] - previous_point[1], next_point[0] - previous_point[0]))
    difference = abs(track_direction - params["heading"])
    if difference > 180.0:
        difference = 360.0 - difference
    reward = 1.0
    if difference > DIRECTION_THRESHOLD_DEG:
        reward *= 0.5
    return float(reward)
