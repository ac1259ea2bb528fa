"""Simulated privacy attacks, each with a positive control, whose results are evidence for a DPO.

Nothing is imported here on purpose: ``curious_server.probe`` runs as the
aggregation server's process and must load only the server-side modules.
"""
