"""Privacy-budget reports for ethics committees and data-protection officers, in English and French.

Facts first, then words, then layout: ``content`` / ``consortium`` gather and
verify the facts from a site's own files (an ethics report's models are in
``facts``); ``ethics_doc`` with ``ethics_safeguards`` / ``consortium_doc`` lay
them out as blocks in one language (texts in ``i18n``; parts both share in
``doc_parts``); ``html`` and ``pdf`` render the blocks; ``output`` writes the
file atomically.
"""

from flame_private.reports.consortium import ConsortiumReport, build_consortium_report
from flame_private.reports.consortium_doc import consortium_document
from flame_private.reports.content import build_ethics_report
from flame_private.reports.errors import ReportError
from flame_private.reports.ethics_doc import ethics_document
from flame_private.reports.facts import EthicsReport
from flame_private.reports.output import write_document

__all__ = ["ConsortiumReport", "EthicsReport", "ReportError", "build_consortium_report", "build_ethics_report",
           "consortium_document", "ethics_document", "write_document"]
