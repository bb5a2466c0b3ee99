def reward_function(params):
    """Stay near the centre line, keep all wheels on the track, and keep moving forward.

    A DeepRacer-style reward function: hotlap calls it with the same `params` dict
    DeepRacer's simulator provides, so this file runs unchanged on DeepRacer too.
    """
    if not params["all_wheels_on_track"] or params["is_offtrack"]:
        return 1e-3

    half_width = 0.5 * params["track_width"]
    distance = params["distance_from_center"]
    # 1.0 on the centre line, falling linearly to 0.1 at the border.
    centred = max(0.1, 1.0 - distance / half_width)
    return float(centred * (0.5 + 0.5 * params["speed"] / 4.0))
