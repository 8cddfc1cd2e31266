"""The ASGI application: ``create_app(config)``, served by uvicorn (``chatstate serve``).

The app opens its store in its lifespan (or uses one it is given), so every worker
process has its own connections and no state but caches: sessions, response logs and keys
all live in the database, and any process can serve any request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from chatstate.context.engine import ContextEngine
from chatstate.errors import ChatstateError
from chatstate.health import HealthMetrics
from chatstate.server import errors, ui
from chatstate.server.admission import Admission, Gate, gate_gauges
from chatstate.server.auth import KeyRing
from chatstate.server.config import ServerConfig, is_loopback
from chatstate.server.deps import Services, services
from chatstate.server.fleet import MetricsShare, SharedRateLimiter, connect, namespace
from chatstate.server.gateway import AfterTurn, Gateway, TurnDone
from chatstate.server.middleware import BodyLimit, Metrics, MetricsMiddleware, RateLimiter
from chatstate.server.routes_chat import router as chat_router
from chatstate.server.routes_sessions import router as sessions_router
from chatstate.server.routes_state import router as state_router
from chatstate.server.streams import ResponseLog
from chatstate.state import StateKeeper
from chatstate.store.encrypted import EncryptedStore
from chatstate.store.erase import purge_expired
from chatstate.store.keys import StaticKeys
from chatstate.store.protocol import Store
from chatstate.store.url import open_store, redact

__all__ = ["StartupRefused", "app_from_env", "create_app", "decide_dev_mode"]

log = logging.getLogger(__name__)
PURGE_EVERY = 60.0


class StartupRefused(Exception):
    """The server must not start as configured (keys missing on a public interface)."""


async def decide_dev_mode(config: ServerConfig, keys: KeyRing, *, announce: bool = True) -> bool:
    """Development mode (no keys needed) only with no keys and a loopback host."""
    if config.dev_mode is not None:
        return config.dev_mode
    if await keys.any_keys():
        return False
    if not is_loopback(config.host):
        raise StartupRefused(
            f"no API keys exist and {config.host} is not a loopback address: create one with "
            "`chatstate keys create --tenant T --scopes read,write` or bind to 127.0.0.1"
        )
    if announce:
        log.warning(
            "no API keys: serving as a single-tenant development instance (tenant 'default') "
            "on %s only; `chatstate keys create` turns authentication on",
            config.host,
        )
    return True


def create_app(config: ServerConfig | None = None, *, store: Store | None = None) -> FastAPI:
    """The application. With ``store`` given, the caller opens and closes it."""
    config = config or ServerConfig()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        opened = store or await open_store(config.database_url, cache_url=config.redis_url)
        if config.encryption_keys:
            opened = EncryptedStore(opened, StaticKeys.from_text(config.encryption_keys))
        timeout = httpx.Timeout(config.upstream_timeout, connect=10.0)
        limits = httpx.Limits(
            max_connections=config.upstream_max_connections,
            max_keepalive_connections=config.upstream_max_keepalive,
        )
        http = httpx.AsyncClient(timeout=timeout, limits=limits)
        try:
            svc = _services(config, opened, http, metrics)
            if config.redis_url:
                prefix = namespace(config.redis_url)
                svc.fleet = MetricsShare(connect(config.redis_url), metrics, prefix=prefix)
                svc.fleet.start()
            svc.dev_mode = await decide_dev_mode(config, svc.keys)
            app.state.services = svc
            log.info("chatstate serving %s", redact(config.database_url))
            purger = asyncio.create_task(_purge(opened))
            try:
                yield
            finally:
                purger.cancel()
                await svc.gateway.aclose()
                await svc.engine.aclose()
                await svc.limiter.aclose()
                if svc.fleet is not None:
                    await svc.fleet.aclose()
        finally:
            await http.aclose()
            if own:
                await opened.close()

    app = FastAPI(
        title="chatstate",
        summary="Durable conversation state for LLM chat",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # /docs is served from packaged assets by ui.install
        redoc_url=None,  # ReDoc loads from a CDN only
    )
    errors.install(app)
    app.include_router(sessions_router)
    app.include_router(chat_router)
    app.include_router(state_router)
    ui.install(app)  # the inspector at /ui and the offline /docs
    _add_operations(app, metrics)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.state.admission = gate = Gate(config.max_in_flight, floor=config.min_in_flight)
    app.state.stream_admission = streams = Gate(config.max_streams)
    # Before the body is read; gateway turns against their own bound.
    app.add_middleware(Admission, gate=gate, streams=streams, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _services(
    config: ServerConfig, store: Store, http: httpx.AsyncClient, metrics: Metrics
) -> Services:
    engine = ContextEngine(store)
    responses = ResponseLog(
        store,
        ttl_seconds=config.response_ttl_seconds,
        lease_seconds=config.lease_seconds,
        flush_seconds=config.stream_flush_seconds,
        flush_bytes=config.stream_flush_bytes,
    )
    gateway = Gateway(
        store=store,
        engine=engine,
        responses=responses,
        config=config,
        metrics=metrics,
        http=http,
    )
    health = HealthMetrics()
    gateway.after_turn = _state_and_health(StateKeeper(store), health)
    return Services(
        config=config,
        store=store,
        engine=engine,
        reader_engine=ContextEngine(store, auto_compact=False),
        responses=responses,
        gateway=gateway,
        keys=KeyRing(store, cache_seconds=config.key_cache_seconds),
        limiter=_limiter(config),
        metrics=metrics,
        http=http,
        dev_mode=False,
        health=health,
    )


def _limiter(config: ServerConfig) -> RateLimiter:
    """Buckets in Redis when the service has one (shared by every worker), else local."""
    if config.redis_url:
        return SharedRateLimiter(
            connect(config.redis_url),
            rate=config.rate_per_second,
            burst=config.rate_burst,
            prefix=namespace(config.redis_url),
        )
    return RateLimiter(rate=config.rate_per_second, burst=config.rate_burst)


def _state_and_health(keeper: StateKeeper, health: HealthMetrics) -> AfterTurn:
    """After each stored answer, off the request path: extract facts and commitments into
    the state document of the branch the turn ran on (``TurnDone.branch``: the branch the
    gateway appended the turn to) and count the re-asks and contradictions it flags."""

    async def after_turn(done: TurnDone) -> None:
        # The turn's own branch: each branch keeps its own state document.
        result = await keeper.on_branch(done.branch).sync(done.session_id, tenant_id=done.tenant)
        health.observe_flags(result.flags)

    return after_turn


async def _purge(store: Store) -> None:
    """Expired sessions and response logs go, idempotency records after their TTL."""
    while True:
        await asyncio.sleep(PURGE_EVERY)
        try:
            removed = await purge_expired(store)
        except ChatstateError:
            log.warning("purging expired sessions failed", exc_info=True)
            continue
        if removed:
            log.info("purged %d expired sessions", removed)


def _add_operations(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        """The store answers."""
        svc = services(request)
        try:
            await asyncio.wait_for(svc.keys.any_keys(), 5.0)
        except (ChatstateError, TimeoutError) as exc:
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics_text(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests, responses and session health (with
        ``--redis-url``, requests and responses summed over every worker)."""
        svc = services(request)
        own = await svc.fleet.render() if svc.fleet is not None else metrics.render()
        text = own + gate_gauges(request.app.state.admission) + svc.health.render()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def app_from_env() -> FastAPI:
    """The factory ``chatstate serve --workers N`` gives uvicorn (settings from the env)."""
    return create_app(ServerConfig.load())
