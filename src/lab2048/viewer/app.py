"""`lab2048 view`: a plain ASGI app (served by uvicorn) with a JSON API and one static page.

    GET /                          the page (static/index.html, app.js, style.css)
    GET /api/info                  dataset, annotations, sidecar, what is missing and why,
                                   the move names (engine conventions)
    GET /api/runs?sort=score&order=desc&min_highest_tile=8192&offset=0&limit=50
    GET /api/runs/ID               one run's steps (boards, moves, values, policy, Q, returns)
    GET /api/runs/ID/bins?step=K   the value head's distribution at one step

Choices
- No framework: routes are a handful of fixed patterns, so a small ASGI callable is easier to
  read than a router. Static files are a fixed set of names read from the package at start;
  no request path is ever joined to a directory, so no request can read any other file (the
  data files are opened once, at start, from the command's arguments).
- The page needs no build step: plain HTML, CSS and JavaScript (SVG for charts).
- Loopback by default: the viewer has no login.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

from lab2048.viewer.data import ViewerData

STATIC = {"index.html": "text/html; charset=utf-8",
          "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
_RUN = re.compile(r"/api/runs/(\d{1,10})")
_BINS = re.compile(r"/api/runs/(\d{1,10})/bins")


class ViewerApp:
    """The ASGI application over one ViewerData."""

    def __init__(self, data: ViewerData) -> None:
        self.data = data
        here = Path(__file__).parent / "static"
        self.static = {name: (here / name).read_bytes() for name in STATIC}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, {"error": "only GET"})
            return
        status, body, kind = await asyncio.to_thread(self.route, scope["path"],
                                                     scope.get("query_string", b""))
        await _send(send, status, body, kind, head=scope["method"] == "HEAD")

    def route(self, path: str, query_string: bytes) -> tuple[int, object, str]:
        """(status, body, content type) of a GET; JSON bodies as Python objects."""
        query = dict(parse_qsl(query_string.decode("latin-1")))
        if path in ("/", "/index.html"):
            return 200, self.static["index.html"], STATIC["index.html"]
        if path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            return 200, self.static[name], STATIC[name]
        try:
            if path == "/api/info":
                return 200, self.data.info(), ""
            if path == "/api/runs":
                return 200, self.data.runs_page(query), ""
            if m := _RUN.fullmatch(path):
                run = self.data.run(int(m.group(1)))
                return (404, {"error": f"no run {m.group(1)}"}, "") if run is None else \
                    (200, run, "")
            if m := _BINS.fullmatch(path):
                step = query.get("step", "")
                if not step.isdigit():
                    return 400, {"error": "step must be a step index"}, ""
                bins = self.data.value_bins(int(m.group(1)), int(step))
                return (404, {"error": "no value distribution for this step"}, "") \
                    if bins is None else (200, bins, "")
        except ValueError as e:
            return 400, {"error": str(e)}, ""
        return 404, {"error": "not found"}, ""


async def _send(send, status: int, body, kind: str = "", head: bool = False) -> None:
    if not isinstance(body, bytes):
        body, kind = json.dumps(body, allow_nan=False).encode(), "application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"" if head else body})


def serve(cfg) -> int:
    """Open the data (refusing bad input in one line) and serve until Ctrl-C."""
    import socket

    import uvicorn

    from lab2048.data.dataset import default_dataset
    from lab2048.errors import UserError

    try:  # a taken port or a bad address is one line, before the data is opened
        with socket.create_server((cfg.host, cfg.port)):
            pass
    except OSError as e:
        raise UserError(f"{cfg.host}:{cfg.port}: cannot listen ({e.strerror or e})") from None

    data = ViewerData(Path(cfg.dataset) if cfg.dataset else default_dataset(),
                      Path(cfg.annotations) if cfg.annotations else None,
                      Path(cfg.sidecar) if cfg.sidecar else None)
    for what, why in data.info()["missing"].items():
        if why:
            print(f"lab2048 view: {what}: {why}")
    print(f"lab2048 view: {data.ds.root}: {len(data.runs['id']):,} runs at "
          f"http://{cfg.host}:{cfg.port}/", flush=True)
    uvicorn.run(ViewerApp(data), host=cfg.host, port=cfg.port, log_level="warning")
    return 0
