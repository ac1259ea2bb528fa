"""The A4 page the PDF reports are drawn on: DejaVu fonts (French accents, epsilon, sigma), the house colours
and sizes, a running header, and a footer with site, date and "page n of N".

The DejaVu TrueType fonts are the ones matplotlib ships, so nothing else needs installing.
"""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from flame_private.reports.blocks import Document
from flame_private.reports.i18n import t

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = {("DejaVu", ""): "DejaVuSans.ttf", ("DejaVu", "B"): "DejaVuSans-Bold.ttf",
         ("DejaVu", "I"): "DejaVuSans-Oblique.ttf", ("DejaVu", "BI"): "DejaVuSans-BoldOblique.ttf",
         ("DejaVuMono", ""): "DejaVuSansMono.ttf", ("DejaVuMono", "B"): "DejaVuSansMono-Bold.ttf"}

NAVY = (18, 58, 102)
GREY = (85, 85, 85)
RULE = (154, 165, 177)
HEAD_FILL = (227, 233, 240)
KEY_FILL = (242, 245, 248)
TONE_FILL: dict[str, tuple[int, int, int]] = {"ok": (230, 244, 234), "attention": (255, 244, 214),
                                              "fail": (251, 227, 225), "info": (234, 241, 251)}
TONE_LINE: dict[str, tuple[int, int, int]] = {"ok": (46, 139, 87), "attention": (217, 164, 0),
                                              "fail": (192, 57, 43), "info": (31, 95, 168)}
MARGIN = 18.0
BODY_PT, SMALL_PT, MONO_PT = 9.5, 8.0, 7.0
CELL_PAD = 1.4
NATIVE_DPI = 110
MAX_FIGURE_H = 120.0
KEEP_TOGETHER_ROWS = 15


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


class PdfPage(FPDF):
    """One report's pages: fonts, margins, metadata, running header and footer, and the layout helpers."""

    def __init__(self, doc: Document) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.doc = doc
        for (family, style), name in FONTS.items():
            self.add_font(family, style, str(FONT_DIR / name))
        self.set_margins(MARGIN, MARGIN + 2, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN)
        self.set_title(doc.title)
        self.set_creator("flame-private")
        self.set_lang(doc.lang)
        if doc.metadata:
            self.set_keywords(" ".join(f"{k}={v}" for k, v in doc.metadata.items()))
        self.set_draw_color(*RULE)

    # ------------------------------------------------------------------ page furniture

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font("DejaVu", "", 7.5)
        self.set_text_color(*GREY)
        self.set_xy(MARGIN, 9)
        self.cell(self.epw, 4, self.doc.header, align="R")
        self.set_draw_color(*RULE)
        self.line(MARGIN, 14, self.w - MARGIN, 14)
        self.set_text_color(0, 0, 0)
        self.set_y(MARGIN + 2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_draw_color(*RULE)
        self.line(MARGIN, self.get_y() - 1.5, self.w - MARGIN, self.get_y() - 1.5)
        self.set_font("DejaVu", "", 7.5)
        self.set_text_color(*GREY)
        page = t("page", self.doc.lang, n=self.page_no(), total="{nb}")
        self.cell(self.epw * 0.75, 4, self.doc.footer, align="L")
        self.cell(self.epw * 0.25, 4, page, align="R")
        self.set_text_color(0, 0, 0)

    # ------------------------------------------------------------------ helpers

    def room(self) -> float:
        """Height left above the page-break trigger."""
        return self.page_break_trigger - self.get_y()

    def need(self, height: float) -> None:
        if self.room() < height:
            self.add_page()

    def text_block(self, text: str, size: float = BODY_PT, style: str = "", family: str = "DejaVu",
                   colour: tuple[int, int, int] = (0, 0, 0), indent: float = 0.0, gap: float = 1.8) -> None:
        self.set_font(family, style, size)
        self.set_text_color(*colour)
        self.set_x(MARGIN + indent)
        self.multi_cell(self.epw - indent, size * 0.45, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0, 0, 0)
        self.ln(gap)
