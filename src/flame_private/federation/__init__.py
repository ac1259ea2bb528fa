"""Flower apps: the keyless aggregation server and the site client, and what a site logs.

``server/`` (ServerApp, ``EncryptedFedAvg``, checkpoints) never imports key
handling; ``site/`` (ClientApp, the site's protocol steps and one spend path, the
training and evaluation factories, app pinning) is the only side that does.
``protocol`` is the wire format both sides share.  As in Flower's app templates,
the ClientApp's handlers are thin: ``site.site`` holds the protocol steps, ``site.task``
the model, data, train and evaluate factories that path runs.
``inprocess`` and ``simulation`` run both sides in one process, for tests, attack
simulations and ``flame demo``.
"""
