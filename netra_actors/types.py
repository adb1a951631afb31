"""The classes of objects the runtime hands you, for annotations, and the store's contract.

You rarely build these yourself; you get them from a call and name them in type hints:

``AgentBase``
    the common base of ``Agent`` and ``ThreadedAgent``: ``agents: list[type[AgentBase]]``.
``MessageStream``/``ThreadedMessageStream``
    what ``ctx.message()`` returns inside an async/threaded agent.
``Subscription``/``EmbeddedSubscription``
    what ``runtime.subscribe(...)`` returns on trio/from asyncio (``embed``).
``Store``
    the protocol ``open_runtime(store=...)`` takes (``netra_actors.testing.MemoryStore`` is one).
``SCHEMA_VERSION``
    the database schema version this code writes (an older database is migrated at open).
``ThreadsPage``/``ThreadInfo``/``HistoryPage``
    what ``runtime.threads(...)`` and ``runtime.history(...)`` return.
``ConversationMessage``
    one entry of ``ctx.conversation()``: a user or assistant message, or a tool call.
``ToolCallRecord``
    a tool call in a ``ConversationMessage`` (``ctx.conversation()``).
``ClientTool``
    a tool of the client (an AG-UI frontend tool), as ``ctx.client_tools()`` lists it.
"""

from ._agent import AgentBase as AgentBase
from ._conversation import ClientTool as ClientTool
from ._conversation import ConversationMessage as ConversationMessage
from ._conversation import ToolCallRecord as ToolCallRecord
from ._embed import EmbeddedSubscription as EmbeddedSubscription
from ._message_stream import MessageStream as MessageStream
from ._message_stream import ThreadedMessageStream as ThreadedMessageStream
from ._store import SCHEMA_VERSION as SCHEMA_VERSION
from ._store import HistoryPage as HistoryPage
from ._store import Store as Store
from ._store import ThreadInfo as ThreadInfo
from ._store import ThreadsPage as ThreadsPage
from ._subscription import Subscription as Subscription

__all__ = [
    "SCHEMA_VERSION",
    "AgentBase",
    "ClientTool",
    "ConversationMessage",
    "EmbeddedSubscription",
    "HistoryPage",
    "MessageStream",
    "Store",
    "Subscription",
    "ThreadInfo",
    "ThreadedMessageStream",
    "ThreadsPage",
    "ToolCallRecord",
]
