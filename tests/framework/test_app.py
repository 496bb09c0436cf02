"""The app served for real: HTTP requests that enqueue, a worker in the same process, `framework run`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from framework.embedded.launch import free_port
from framework.web.app import create_app


async def _poll_state(http: httpx.AsyncClient, task_id: str, want: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await http.get(f"/demo/tasks/{task_id}")).json()
        if body.get("state") == want or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_create_app_served_by_uvicorn_enqueues_and_runs_tasks(settings: Any) -> None:
    port = free_port()
    app = create_app(settings.replace(load_plugins=[]), run_worker=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert "Enqueue a task" in page.text
            created = await http.post("/demo/tasks", json={"name": "<Ann>", "work_seconds": 0.05})
            assert created.status_code == 202
            task_id = created.json()["id"]
            done = await _poll_state(http, task_id, "completed")
            assert done == {
                "id": task_id,
                "queue": "default",
                "state": "completed",
                "result": {"greeting": "Hello, <Ann>!", "attempt": 1},
            }
            missing = await http.get("/demo/tasks/nope")
            assert missing.status_code == 404
    finally:
        server.should_exit = True
        await serving


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_framework_run_serves_processes_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """`framework run` on embedded defaults: its own Valkey, worker and scheduler; Ctrl-C stops everything."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    env["FRAMEWORK_LOAD_PLUGINS"] = ""
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = ""
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _get(f"{base}/healthz") == {"status": "ok"}
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/demo/tasks", data=b'{"name":"run","work_seconds":0}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            task_id = json.loads(response.read())["id"]
        deadline = time.monotonic() + 15
        while _get(f"{base}/demo/tasks/{task_id}")["state"] != "completed":
            assert time.monotonic() < deadline, "the task was not processed by the in-process worker"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        rest, _ = proc.communicate(timeout=30)
        out += rest or ""
        if proc.returncode != 0:
            print(out)
    assert proc.returncode == 0, out
    assert f"App:        http://127.0.0.1:{port}/" in out
    assert f"Data:       {tmp_path / '.data'}" in out
    assert "worker_stopped" in out
    # the embedded Valkey went away with its owner and left its AOF behind
    assert not (tmp_path / ".data" / "valkey" / "valkey.pid").exists()
    assert (tmp_path / ".data" / "valkey" / "appendonlydir").is_dir()
