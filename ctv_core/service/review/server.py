"""Starting the station: one process serving the page (trame-slicer) and the HTTP API on one address.

The trame server owns the event loop; before its web application starts, the access middleware
(:mod:`.access`), the security headers and the API's routes (:mod:`.api`) are added to it, so
that every request, the page's included, passes the same checks. trame and wslink never read this
process's command line (``ctv review`` has its own options): their parser is given only the
websocket's secret, new and random at every start (wslink's default is the same everywhere),
and the address, port and the idle timeout (none) are passed explicitly. The page learns the
secret from its address: a request for the page without it is redirected to the same address
with ``secret=`` added (the page's script takes it out of the address bar at once). The prediction
workers start with the server and stop with it, their running jobs queued again for the next
start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import Callable
from urllib.parse import urlencode

from ...errors import CTVError
from .config import StationConfig

logger = logging.getLogger(__name__)

#: JPEG quality of the views' frames (trame-rca's still quality).
STILL_QUALITY = 90


def _require_review_extra() -> None:
    import importlib.util

    missing = [name for name in ("trame_slicer", "slicer", "CTVDelineationLib")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise CTVError(f"The review station needs the 'review' extra ({', '.join(missing)} missing): "
                       'pip install -e ".[review]" (trame-slicer and slicer-core), then start it again.')


def model_choices(config: StationConfig) -> dict[str, str]:
    """The station's models for the page: 'name version' -> package path ('' for the bundled model)."""
    from CTVDelineationLib.ModelInfo import describeModel

    choices: dict[str, str] = {}
    for path in config.models:
        description = describeModel(path)
        choices[f"{description.name} {description.version}"] = str(path) if path else ""
    return choices


def _quiet_trame_command_line(server, secret: str) -> None:
    """trame's parser reads no command line but the websocket's secret.

    The secret is given as ``--authKey=SECRET``: a URL-safe token starts with ``-`` one time in
    64, and argparse reads a separate ``-...`` word as an option, not as the value.
    """
    from trame_server.utils.argument_parser import ArgumentParser

    parser = server.cli
    parser.parse_known_args = lambda args=None, namespace=None: ArgumentParser.parse_known_args(
        parser, [f"--authKey={secret}"], namespace)


def secret_middleware(secret: str):
    """Requests for the page without the websocket's secret are redirected to the same address with it."""
    from aiohttp import web

    @web.middleware
    async def add_secret(request, handler):
        if request.method == "GET" and request.path in ("/", "/index.html") and "secret" not in request.query:
            query = urlencode([*request.query.items(), ("secret", secret)])
            raise web.HTTPFound(f"{request.path}?{query}", headers={"Cache-Control": "no-store"})
        return await handler(request)

    return add_secret


def _layout(layout_manager) -> None:
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    axial = ViewLayoutDefinition.axial_view()
    others = [ViewLayoutDefinition.threed_view(), ViewLayoutDefinition.coronal_view(),
              ViewLayoutDefinition.sagittal_view()]
    layout_manager.register_layout("review", Layout(LayoutDirection.Horizontal,
                                                    [axial, Layout(LayoutDirection.Vertical, others)],
                                                    flex_sizes=["2", "1"]))
    layout_manager.set_layout("review")


def serve(config: StationConfig, on_ready: Callable[[StationConfig], None] | None = None) -> None:
    """Run the station until SIGINT or SIGTERM (blocking). ``on_ready`` is told the address once it listens.

    Raises
    ------
    CTVError
        A model package that cannot be used, a data folder that cannot be a case store.
    """
    _require_review_extra()
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # off-screen views, no X server
    os.environ["WSLINK_READY_MSG"] = ""  # wslink would write a line of its own to stdout
    import trame_slicer
    from trame.app import get_server
    from trame_slicer.app.logic.segmentation import SegmentEditorLogic
    from trame_slicer.core import LayoutManager, SlicerApp
    from trame_slicer.rca_view import register_rca_factories

    from .access import PageUsers, access_middleware, add_security_headers
    from .api import add_api
    from .app import ReviewApp
    from .desk import ReviewDesk
    from .page import build_page
    from .scene import CaseScene

    models = model_choices(config)
    desk = ReviewDesk(config, models)
    server = get_server("ctv-review", client_type="vue3")
    secret = secrets.token_urlsafe(24)
    _quiet_trame_command_line(server, secret)
    server.enable_module(trame_slicer.module)
    server.state.trame__title = "CTV review station"

    slicer_app = SlicerApp()
    # One quality for every frame: a step (autoplay, a slider, a paint stroke) costs one render, not a quick
    # frame and, 5 periods later, a sharper one.
    register_rca_factories(slicer_app.view_manager, server, interactive_quality=STILL_QUALITY)
    layout_manager = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
    _layout(layout_manager)
    editor_logic = SegmentEditorLogic(server, slicer_app)  # after the views: its effects attach to them
    scene = CaseScene(slicer_app, editor_logic)
    pages = PageUsers()
    app = ReviewApp(server, desk, scene, pages)
    editor_logic.set_ui(build_page(server, layout_manager))

    def bind(web_server) -> None:
        web_server.app.middlewares.insert(0, access_middleware(config.tokens, config.host, pages))
        web_server.app.middlewares.insert(1, secret_middleware(secret))
        web_server.app.on_response_prepare.append(add_security_headers)
        add_api(web_server.app, desk)

    def ready(**_) -> None:
        actual = dataclasses.replace(config, port=server.port)
        app.start()
        if on_ready is not None:
            on_ready(actual)

    server.controller.on_server_bind.add(bind)
    server.controller.on_server_ready.add(ready)
    desk.start()
    try:
        server.start(host=config.host, port=config.port, open_browser=False, show_connection_info=False, timeout=0,
                     disable_logging=True)
    finally:
        desk.stop()
        _cancel_pending_tasks()


def _cancel_pending_tasks() -> None:
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        return
    if loop.is_closed() or loop.is_running():
        return
    for task in asyncio.all_tasks(loop):
        task.cancel()
