"""Privacy-budget reports for ethics committees and data-protection officers, in English and French.

Facts first, then words, then layout: ``content`` / ``consortium`` gather and
verify the facts from a site's own files; ``ethics_doc`` / ``consortium_doc``
lay them out as blocks in one language (texts in ``i18n``); ``html`` and
``pdf`` render the blocks; ``output`` writes the file atomically.
"""

from flame_private.reports.consortium import ConsortiumReport, build_consortium_report
from flame_private.reports.consortium_doc import consortium_document
from flame_private.reports.content import EthicsReport, build_ethics_report
from flame_private.reports.errors import ReportError
from flame_private.reports.ethics_doc import ethics_document
from flame_private.reports.output import write_document

__all__ = ["ConsortiumReport", "EthicsReport", "ReportError", "build_consortium_report", "build_ethics_report",
           "consortium_document", "ethics_document", "write_document"]
