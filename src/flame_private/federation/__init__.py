"""Flower apps: the keyless aggregation server and the site client, and what a site logs.

Server side (``server_app``, ``strategy``, ``protocol``) never imports key
handling; the site side (``client_app``, ``site``, ``task``) is the only place that does.
As in Flower's app templates, the ClientApp's handlers are thin: ``site`` holds the
protocol steps and the site's one spend path, ``task`` the model, data, train and
evaluate factories that path runs.
``inprocess`` runs both sides in one process, for tests and attack simulations.
"""
