"""The site's records and their audit: what a DPO verifies, key-free and read-only.

Hash chains
    ``chain`` (the format: canonical JSON, entry hashes, the head), ``chain_verify``
    (the checks on open), ``hashchain`` (appends and crash repairs) and ``durable``
    (the fsync discipline): shared by the privacy ledger (``privacy/ledger.py``), the
    egress log and the approved-apps log.  They import nothing else of flame's, so
    ``privacy`` can build on them.
The egress log
    ``egress``: every message that left the site; ``code_identity``: the ``app_hash``
    of the installed code.
The audit
    ``audit.audit_site`` runs the checks in ``audit_payloads``, ``audit_chains`` and
    ``audit_provenance``; ``audit_report`` holds what they find, ``anchor`` the chain
    heads a DPO certified from one audit to the next, ``audit_cli`` ``flame audit``.

Reports read these records from here, never from the federation code that writes them.
"""
