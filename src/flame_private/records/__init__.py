"""The site's records and their audit: what a DPO verifies, key-free and read-only.

``hashchain`` holds the append-only, hash-chained log mechanics shared by the privacy
ledger (``privacy/ledger.py``), the egress log (``egress``) and the approved-apps log;
``egress`` is the record of every message that left the site; ``audit`` checks them
all (``flame audit``, ``audit_cli``), and ``anchor`` carries the chain heads a DPO
certified from one audit to the next.  Reports read these records from here, never
from the federation code that writes them.
"""
