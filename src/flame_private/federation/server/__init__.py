"""The aggregation server (Flower ServerApp): rounds, the keyless strategy, checkpoints.

Holds the params-only context and nothing else: no module here imports
``flame_private.secure.site`` or ``flame_private.federation.site`` (a test checks it
in a fresh interpreter).
"""
