"""The embedded stack that `portineria dev` and the benchmark start."""

from __future__ import annotations

import os
import stat
from urllib.parse import urlparse

from redis import Redis

from bot.runtime.devstack import start_embedded_redis, stop_process


def test_embedded_redis_listens_on_a_socket_only_its_owner_can_open():
    url, process = start_embedded_redis()
    try:
        socket_path = urlparse(url).path
        folder_mode = stat.S_IMODE(os.stat(os.path.dirname(socket_path)).st_mode)
        client = Redis.from_url(url)

        assert url.startswith("unix://")
        assert folder_mode == 0o700
        assert stat.S_IMODE(os.stat(socket_path).st_mode) & 0o077 == 0
        assert client.ping()
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
        client.close()
    finally:
        stop_process(process)
