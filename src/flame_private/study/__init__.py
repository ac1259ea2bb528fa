"""The evidence study: leave-one-site-out comparison of single-site, federated and centralised models.

``config`` (what to run), ``plan`` (the units of work), ``arms`` (how each arm trains),
``scoring`` (a model and its baselines on the held-out site), ``runner`` (resumable
execution into ``study.json``), ``plots`` (the figures of docs/results.md).
"""
