"""hotlap/local.py's process handling: a second Ctrl-C stops every service at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import hotlap.local as local

STUCK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
POLITE = "import time; print('ready', flush=True); time.sleep(60)"


def _start(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # its handlers are in place
    return proc


def test_a_second_ctrl_c_kills_a_service_that_does_not_stop_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service stuck in a native call never runs its SIGTERM handler: it is killed after the grace."""
    monkeypatch.setattr(local, "STOP_AT_ONCE_GRACE_S", 1.0)
    stuck, polite = _start(STUCK), _start(POLITE)
    started = time.monotonic()
    try:
        assert local._stop_at_once([stuck, polite]) == [-9, -15]
        assert time.monotonic() - started < 30
    finally:
        for proc in (stuck, polite):
            if proc.poll() is None:
                proc.kill()
