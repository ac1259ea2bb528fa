"""The synthetic multi-centre glioblastoma cohort: anatomy, tumour growth, radiotherapy by modality, imaging.

A simulator only: real-data code (data/, metrics, the federation) never imports it
(tests/test_import_boundaries.py), so a site's own scans never depend on it.
"""
