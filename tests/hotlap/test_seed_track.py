"""A track given as a .npy file travels with the run (issue 6 item 11).

The file is validated when the run is seeded and stored next to training_params.yaml (with its
sha256); a worker reads it from the store, so one on another machine, where the seeding machine's
path does not exist, drives the very same waypoints. The store here is an S3 server over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hotlap.seed import SeedError, UserFiles, prepare_run_files, seed_store
from shared.config import ConfigError, RunSettings
from shared.run_files import load_run_files
from shared.store import TRAINING_PARAMS, ModelStore, open_store
from simulator.track import TrackError, load_run_track, load_track
from tests.simulator.synthetic import circle_rows

REPO = Path(__file__).resolve().parents[2]


def a_custom_track(folder: Path) -> Path:
    """An odd-shaped, non-packaged loop: an ellipse with varying width and a duplicate row."""
    rows = circle_rows(points=97)
    rows[:, [0, 2, 4]] *= 1.7
    rows = np.insert(rows, 40, rows[40], axis=0)
    path = folder / "my_oval.npy"
    np.save(path, rows)
    return path


def test_a_track_file_is_stored_with_the_run_and_a_worker_reads_only_the_store(
    tmp_path: Path, s3_store_url: str, s3_endpoint: str
) -> None:
    path = a_custom_track(tmp_path)
    expected = load_track(path)
    files = prepare_run_files(UserFiles(), RunSettings(track=str(path)))
    store = ModelStore(open_store(s3_store_url, s3_endpoint))
    seed_store(store, files)
    path.unlink()  # the worker's machine has no such file

    params = yaml.safe_load(store.get_text(TRAINING_PARAMS))
    assert params["WORLD_NAME"] == "my_oval" and params["TRACK_FILE"] == "my_oval.npy"
    assert "my_oval.npy" in store.objects.list()  # next to training_params.yaml

    inputs = load_run_files(ModelStore(open_store(s3_store_url, s3_endpoint)))
    track = load_run_track(inputs.settings.track, inputs.track_npy, inputs.settings.track_file or "")
    assert track.name == "my_oval"
    assert track.waypoints == expected.waypoints  # identical, duplicate dropped as on the seeding machine
    np.testing.assert_array_equal(track.inner, expected.inner)
    np.testing.assert_array_equal(track.outer, expected.outer)


def test_a_packaged_track_stores_no_file(tmp_path: Path) -> None:
    files = prepare_run_files(UserFiles(), RunSettings(track="Bowtie_track"))
    assert files.track_npy is None and files.settings.track_file is None
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, files)
    inputs = load_run_files(store)
    assert load_run_track(inputs.settings.track, inputs.track_npy, "").waypoints == \
        load_track("Bowtie_track").waypoints


def test_hotlap_seed_takes_the_track_path_from_HOTLAP_TRACK(tmp_path: Path) -> None:
    """The compose init service: HOTLAP_TRACK=/custom_files/<name>.npy."""
    path = a_custom_track(tmp_path)
    store = tmp_path / "store"
    result = subprocess.run([sys.executable, "-m", "hotlap", "seed"], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={"HOTLAP_STORE_URL": f"file://{store}", "HOTLAP_TRACK": str(path),
                                           "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert (store / "my_oval.npy").read_bytes() == path.read_bytes()
    assert "track my_oval" in result.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not numpy at all", "not a readable .npy array"),
        (None, "expected at least 6 columns"),
    ],
)
def test_a_bad_track_file_is_refused_naming_the_file(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "broken_track.npy"
    if content is None:
        np.save(path, np.zeros((10, 4)))
    else:
        path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "hotlap", "seed", "--track", str(path)], capture_output=True,
                            text=True, timeout=120, cwd=REPO,
                            env={"HOTLAP_STORE_URL": f"file://{tmp_path / 'store'}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert str(path) in result.stderr and problem in result.stderr
    assert not (tmp_path / "store").exists()  # nothing seeded


def test_a_missing_track_file_and_an_odd_file_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="nowhere/x.npy: no such track file"):
        prepare_run_files(UserFiles(), RunSettings(track=str(tmp_path / "nowhere" / "x.npy")))
    odd = tmp_path / "my track!.npy"
    np.save(odd, circle_rows())
    with pytest.raises(SeedError, match="must be letters, digits"):
        prepare_run_files(UserFiles(), RunSettings(track=str(odd)))


def test_a_changed_or_missing_stored_track_stops_the_worker_naming_the_key(tmp_path: Path) -> None:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, prepare_run_files(UserFiles(), RunSettings(track=str(a_custom_track(tmp_path)))))
    store.objects.put("my_oval.npy", (tmp_path / "my_oval.npy").read_bytes() + b"\0")
    with pytest.raises(ConfigError, match=r"(?s)my_oval.npy.*sha256"):
        load_run_files(store)
    (tmp_path / "store" / "my_oval.npy").unlink()
    with pytest.raises(ConfigError, match=r"(?s)my_oval.npy.*missing"):
        load_run_files(store)


def test_a_run_naming_an_unknown_track_without_a_stored_file_is_refused() -> None:
    with pytest.raises(TrackError, match="'/home/racer/my_oval.npy' is not a packaged DeepRacer track"):
        load_run_track("/home/racer/my_oval.npy", None, "")


def test_hotlap_render_drives_a_model_on_the_track_stored_with_its_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hotlap.cli import main as cli_main
    from shared.config import observation_shapes
    from shared.networks import PolicyNetwork, architecture, state_to_bytes

    path = a_custom_track(tmp_path)
    files = prepare_run_files(UserFiles(), RunSettings(track=str(path)))
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, files)
    path.unlink()
    network = PolicyNetwork(observation_shapes(files.metadata.sensor, files.hyperparameters.stack_size),
                            files.metadata.neural_network, files.metadata.action_spec())
    store.publish_version(0, state_to_bytes(network), architecture(network))  # as the trainer writes it
    assert cli_main(["render", "--model", store.url, "--steps", "5", "--output", str(tmp_path / "x.png")]) == 0
    assert "on my_oval" in capsys.readouterr().out
