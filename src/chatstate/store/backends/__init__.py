"""The storage backends, one folder (or module) each; each subclasses
:class:`~chatstate.store.front.StoreFront` and implements its primitives."""
