"""The poller's own ``/health``: a tiny HTTP server for the pod's liveness probe, and the
rule it applies (a pure function of the loop's and the workers' last beats). The same
server answers ``/metrics`` (Prometheus text, rendered by the supervisor's registry)."""

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django_fullctl.poller.slot import RunningRef


def judge(
    now: float,
    loop_beat: float,
    poll_interval: float,
    track_interval: float,
    workers: Sequence[tuple[str, RunningRef | None]],
    draining: bool,
) -> tuple[bool, dict[str, Any]]:
    """Is this pod making progress? Judged from the supervisor's loop and the workers' own
    beats, never from the database (an outage must not restart every pod).

    The loop must have turned within ``max(30 s, 3 poll intervals)``; a worker running a
    task must have beaten within ``3 track intervals + 2 s``.
    """
    loop_age = now - loop_beat
    beat_limit = 3 * track_interval + 2
    stuck = [wid for wid, ref in workers if ref and now - ref.last_beat > beat_limit]
    ok = loop_age < max(30.0, 3 * poll_interval) and not stuck
    return ok, {
        "status": "ok" if ok else "fail",
        "loop_age_seconds": round(loop_age, 1),
        "workers": len(workers),
        "busy": sum(1 for _, ref in workers if ref),
        "stuck_workers": stuck,
        "draining": draining,
    }


Exposition = Callable[[], tuple[bytes, str]]


def serve(
    port: int, probe: Callable[[], tuple[bool, dict]], metrics: Exposition | None = None
) -> ThreadingHTTPServer:
    """Answer GET /health with ``probe()``'s JSON: 200 when it says ok, else 503; and GET
    /metrics with ``metrics()`` (body, content type). Without ``metrics``, the probe's
    owner's ``metrics`` is used when it has one (``Supervisor.liveness`` is a bound method
    of the supervisor, which owns the registry)."""
    if metrics is None:
        metrics = getattr(getattr(probe, "__self__", None), "metrics", None)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            if path == "/metrics" and metrics is not None:
                text, content_type = metrics()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return
            if path != "/health":
                self.send_error(404)
                return
            ok, body = probe()
            payload = json.dumps(body).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the event log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="liveness", daemon=True).start()
    return server
