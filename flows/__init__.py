"""Prefect flows: thin wiring over the library functions in ``nearid``, ``generators`` and ``storage``.

Importing this package must stay cheap (no torch, no diffusers): flows import the stages they run
inside their own bodies. Every stage is also runnable from the ``nearid`` CLI without Prefect.
"""
