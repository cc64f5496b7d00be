"""``hybridcert serve`` as a process: SIGTERM lets in-flight requests finish and refuses new
ones; a bad option is one line on stderr."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.serve.conftest import b64, free_port, png

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "hybridcert.cli.main", "serve", "--model",
         "tests.serve.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.8",
         "--target", "0,0", "--target", "0.1,1", "--log-level", "warning", *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve("--port", str(port), "--batch-size", "32", "--speculation", "0",
                     env={"TOY_SERVE_DELAY": "0.01"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(process.stderr.read() if process.poll() is not None
                                 else "server did not start")
        results = {}

        def slow_request():               # ~1,700 draws at 32 rows per 10 ms pass or more
            results["answer"] = httpx.post(url + "/v1/moderate", timeout=60, json={
                "image": b64(png(0.95)), "text": "we bake a cake"})

        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.monotonic() + 30         # SIGTERM once it is deciding (a fixed
        while time.monotonic() < deadline:       # sleep raced a loaded machine)
            depth = httpx.get(url + "/metrics", timeout=10).text
            if "\nhybridcert_queue_depth 1.0" in depth:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            late = httpx.post(url + "/v1/moderate", timeout=10, json={
                "image": b64(png(0.05)), "text": "hello"})
            assert late.status_code == 503           # refused while draining
        except httpx.TransportError:
            pass                                     # or the socket is already closed
        worker.join(60)
        answer = results["answer"]
        assert answer.status_code == 200 and answer.json()["decision"] == "unsafe"
        # uvicorn re-raises the signal once drained: the exit is SIGTERM's (or 0)
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_options_are_one_line_errors(tmp_path):
    short = tmp_path / "keys"
    short.write_text("abc\n")
    short.chmod(0o600)
    open_key = tmp_path / "open.key"
    open_key.write_text("ab" * 32)
    open_key.chmod(0o644)
    for args, message in ((["--api-key-file", str(short)], "shorter than"),
                          (["--seed-key-file", str(short)], "--seed-key-file"),
                          (["--seed-key-file", str(tmp_path / "absent")], "not found"),
                          (["--seed-key-file", str(open_key)], "chmod 600"),
                          (["--allowed-host", "evil.example/x"], "--allowed-host must be"),
                          (["--allowed-origin", "http://a.example/page"],
                           "--allowed-origin must be"),
                          (["--timeout", "0"], "--timeout"),
                          (["--header-timeout", "0"], "--header-timeout must be"),
                          (["--body-timeout", "inf"], "--body-timeout must be"),
                          (["--group-rows", "-1"], "--group-rows must be an integer >= 0")):
        process = _serve(*args)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("hybridcert: error:"), err
        assert message in lines[0]
