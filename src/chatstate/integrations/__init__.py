"""Adapters that put chatstate under the frameworks people already use.

Each lives in its own module and needs its own extra; importing the module without it
raises :class:`ImportError` naming the install command:

* :mod:`chatstate.integrations.agents`: ``ChatstateSession``, an OpenAI Agents SDK
  ``Session`` (``pip install 'chatstate[agents]'``).
* :mod:`chatstate.integrations.langgraph`: ``ChatstateSaver``, a LangGraph checkpointer
  (``pip install 'chatstate[langgraph]'``).
* :mod:`chatstate.integrations.langchain`: ``ChatstateChatMessageHistory``, a LangChain
  ``BaseChatMessageHistory`` (``pip install 'chatstate[langchain]'``).
"""

from __future__ import annotations

__all__: list[str] = []
