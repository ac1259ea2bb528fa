"""Flower apps: the keyless aggregation server and the site client, and what a site logs.

Server side (``server_app``, ``strategy``, ``protocol``) never imports key
handling; the site side (``client_app``, ``site``) is the only place that does.
``inprocess`` runs both sides in one process, for tests and attack simulations.
"""
