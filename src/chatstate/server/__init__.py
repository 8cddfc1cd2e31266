"""The HTTP service: the API over the store, the OpenAI-compatible stateful gateway,
resumable streams, tenants and keys. Needs ``pip install 'chatstate[server]'``.

Run it with ``chatstate serve``; embed it with :func:`create_app`.
"""

from chatstate.server.app import create_app
from chatstate.server.auth import Principal, create_key, revoke_key
from chatstate.server.config import ServerConfig
from chatstate.server.gateway import AfterTurn, TurnDone

__all__ = [
    "AfterTurn",
    "Principal",
    "ServerConfig",
    "TurnDone",
    "create_app",
    "create_key",
    "revoke_key",
]
