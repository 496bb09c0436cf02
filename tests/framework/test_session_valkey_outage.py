"""The pytest plugin's session Valkey after a test took it down on purpose: the next test finds it up again.

Runs a small test session of its own, as an app's test suite would use the plugin.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

_SUITE = """
from framework.errors import RedisUnavailable


async def test_1_an_outage_test_that_fails_before_it_restarts_redis(valkey_server, client):
    valkey_server.{how}()
    assert False, "failed while Redis was down"
    valkey_server.start()


async def test_2_the_next_test_has_redis(redis, client):
    assert await redis.ping()
    await client.enqueue("app:job", b"x")


async def test_3_a_test_that_stops_redis_and_passes(valkey_server):
    valkey_server.stop()


async def test_4_and_the_one_after_it_too(redis):
    assert await redis.ping()
"""


def _run_suite(tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    ini = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:valkey\n"
    (tmp_path / "pytest.ini").write_text(ini)
    (tmp_path / "test_app.py").write_text(textwrap.dedent(_SUITE).replace("{how}", how))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_test_that_took_the_session_valkey_down_leaves_it_up_for_the_next(tmp_path: Path, how: str) -> None:
    done = _run_suite(tmp_path, how)
    assert "1 failed, 3 passed" in done.stdout, done.stdout + done.stderr
    assert "test_1_an_outage_test_that_fails_before_it_restarts_redis" in done.stdout
