"""The emulator's Starlette app: every resource's operations, each served through the Stripe pipeline, and
the control plane under ``/_emulator``. A request that matches no route (or not its method) gets the control plane's 404 under
``/_emulator/``, else Stripe's 401/404, and is logged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Match, Route

from . import control, pipeline
from .resources import RESOURCES

if TYPE_CHECKING:
    from .server import EmulatorServer


def build_app(emulator: "EmulatorServer", resources=RESOURCES) -> Starlette:
    operations = [op for resource in resources for op in resource.operations]
    # Starlette takes the first route that matches: literal paths (/v1/customers/search) before templates
    # (/v1/customers/{id}).
    operations.sort(key=lambda op: op.path.count("{"))
    stripe_routes = [pipeline.operation_route(op) for op in operations]

    async def unrouted(request: Request, exc: Exception):
        if request.scope["path"].startswith(control.PREFIX + "/"):
            return control.unknown(request)
        return await pipeline.unrouted(request, _template(stripe_routes, request))

    app = Starlette(routes=[*stripe_routes, control.mount], exception_handlers={404: unrouted, 405: unrouted})
    app.router.redirect_slashes = False
    app.state.emulator = emulator
    return app


def _template(routes: list[Route], request: Request) -> str:
    """The template of a route whose path matches (for the log), else the path itself."""
    for route in routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            return route.path
    return request.scope["path"]
