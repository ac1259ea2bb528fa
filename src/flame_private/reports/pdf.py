"""A document as an A4 PDF with fpdf2: each block drawn on the page (``pdf_page``), bordered tables whose
headings repeat on each page, short tables and figures kept on one page."""

from __future__ import annotations

import io
import logging
from typing import cast

from fpdf.enums import TableBordersLayout, VAlign, WrapMode, XPos, YPos
from fpdf.fonts import FontFace

from flame_private.reports.blocks import (
    Block,
    Bullets,
    Callout,
    Document,
    Figure,
    Heading,
    PageBreak,
    Paragraph,
    Signature,
    Table,
    Title,
    Tone,
)
from flame_private.reports.i18n import t
from flame_private.reports.pdf_page import (
    BODY_PT,
    CELL_PAD,
    GREY,
    HEAD_FILL,
    KEEP_TOGETHER_ROWS,
    KEY_FILL,
    MARGIN,
    MAX_FIGURE_H,
    MONO_PT,
    NATIVE_DPI,
    NAVY,
    RULE,
    SMALL_PT,
    TONE_FILL,
    TONE_LINE,
    PdfPage,
    png_size,
)

# --------------------------------------------------------------------------- blocks


def _title(pdf: PdfPage, b: Title) -> None:
    pdf.set_y(MARGIN + 4)
    pdf.set_font("DejaVu", "B", 22)
    pdf.set_text_color(*NAVY)
    pdf.multi_cell(pdf.epw, 10, b.title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 12)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(pdf.epw, 6, b.subtitle, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(*NAVY)
    pdf.set_line_width(0.6)
    pdf.line(MARGIN, pdf.get_y() + 2, pdf.w - MARGIN, pdf.get_y() + 2)
    pdf.set_line_width(0.2)
    pdf.set_draw_color(*RULE)
    pdf.ln(6)
    _table(pdf, Table(columns=[], rows=[[k, v] for k, v in b.facts], widths=[0.3, 0.7]))


def _heading(pdf: PdfPage, b: Heading) -> None:
    if b.level == 1:
        pdf.need(45)
        pdf.ln(3)
        pdf.set_font("DejaVu", "B", 13.5)
        pdf.set_text_color(*NAVY)
        pdf.multi_cell(pdf.epw, 7, b.text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_draw_color(*NAVY)
        pdf.set_line_width(0.4)
        pdf.line(MARGIN, pdf.get_y() + 0.5, pdf.w - MARGIN, pdf.get_y() + 0.5)
        pdf.set_line_width(0.2)
        pdf.set_draw_color(*RULE)
        pdf.ln(3)
    else:
        pdf.need(30)
        pdf.ln(1.5)
        pdf.set_font("DejaVu", "B", 11)
        pdf.set_text_color(*NAVY)
        pdf.multi_cell(pdf.epw, 6, b.text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)
    pdf.set_text_color(0, 0, 0)


def _paragraph(pdf: PdfPage, b: Paragraph) -> None:
    if b.style == "small":
        pdf.text_block(b.text, SMALL_PT, colour=GREY)
    elif b.style == "mono":
        pdf.text_block(b.text, MONO_PT, family="DejaVuMono")
    else:
        pdf.text_block(b.text)


def _bullets(pdf: PdfPage, b: Bullets) -> None:
    pdf.set_font("DejaVu", "", BODY_PT)
    for i, item in enumerate(b.items, 1):
        mark = f"{i}." if b.numbered else "•"
        pdf.need(10)
        y = pdf.get_y()
        pdf.set_xy(MARGIN + 2, y)
        pdf.cell(5, BODY_PT * 0.45, mark)
        pdf.set_xy(MARGIN + 7, y)
        pdf.multi_cell(pdf.epw - 7, BODY_PT * 0.45, item, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(0.8)
    pdf.ln(1.2)


def _callout(pdf: PdfPage, b: Callout) -> None:
    """A one-column table with the tone's fill and a coloured outer border: it may break between its rows."""
    fill = TONE_FILL[b.tone]
    pdf.ln(1)
    pdf.set_draw_color(*TONE_LINE[b.tone])
    pdf.set_line_width(0.5)
    pdf.set_font("DejaVu", "", BODY_PT)
    rows: list[tuple[str, FontFace, float]] = [(b.text, FontFace(family="DejaVu", emphasis="BOLD", size_pt=BODY_PT),
                                                2.5)]
    rows += [(f"–  {i}", FontFace(family="DejaVu", size_pt=BODY_PT), 5.0) for i in b.items]
    rows += [(d, FontFace(family="DejaVuMono", size_pt=MONO_PT), 2.5) for d in b.detail if d]
    pdf.need(14)
    with pdf.table(width=pdf.epw, col_widths=(1,), first_row_as_headings=False,
                   borders_layout=TableBordersLayout.NO_HORIZONTAL_LINES, cell_fill_color=fill, cell_fill_mode="ALL",
                   line_height=BODY_PT * 0.47, padding=(1.4, 2.5),
                   text_align="LEFT", v_align=VAlign.T, align="LEFT", wrapmode=WrapMode.WORD) as table:
        for text, face, left in rows:
            table.row().cell(text, style=face, padding=(1.0, 2.5, 1.0, left))
    pdf.set_line_width(0.2)
    pdf.set_draw_color(*RULE)
    pdf.ln(3)


def _face(b: Table, i: int, j: int, size: float) -> FontFace:
    tone: Tone | None = b.tones[i] if i < len(b.tones) else None
    fill = TONE_FILL[tone] if tone else None
    if j in b.mono:
        return FontFace(family="DejaVuMono", size_pt=MONO_PT, fill_color=fill)
    if not b.columns and j == 0:
        return FontFace(family="DejaVu", emphasis="BOLD", size_pt=size, fill_color=fill or KEY_FILL)
    return FontFace(family="DejaVu", emphasis="BOLD" if tone == "info" else None, size_pt=size, fill_color=fill)


def _use(pdf: PdfPage, face: FontFace) -> None:
    pdf.set_font(face.family or "DejaVu", "B" if face.emphasis else "", face.size_pt or BODY_PT)


def _fit_widths(pdf: PdfPage, b: Table, size: float) -> list[float]:
    """Column widths in mm: the given proportions, widened where a single word would not fit (never split a
    heading such as "Round" mid-word); hashes (monospaced columns) may still break anywhere."""
    n = len(b.widths)
    widths = [x / sum(b.widths) * pdf.epw for x in b.widths]
    need = []
    for j in range(n):
        longest = 0.0
        if b.columns:
            pdf.set_font("DejaVu", "B", size)
            longest = max((pdf.get_string_width(w) for w in b.columns[j].split()), default=0.0)
        if j not in b.mono:
            for i, row in enumerate(b.rows):
                _use(pdf, _face(b, i, j, size))
                longest = max([longest, *(pdf.get_string_width(w) for w in row[j].split())])
        need.append(min(longest + 2 * CELL_PAD + 0.8, pdf.epw * 0.5))
    if sum(need) > pdf.epw:
        return widths
    for _ in range(n):
        short = [j for j in range(n) if widths[j] < need[j] - 1e-6]
        if not short:
            break
        deficit = sum(need[j] - widths[j] for j in short)
        for j in short:
            widths[j] = need[j]
        slack = {j: widths[j] - need[j] for j in range(n) if widths[j] > need[j] + 1e-6}
        total = sum(slack.values())
        for j, extra in slack.items():
            widths[j] -= deficit * extra / total
    return widths


def _table_height(pdf: PdfPage, b: Table, widths: list[float], size: float) -> float:
    """The height the table will take (for keeping short tables on one page)."""
    rows = ([b.columns] if b.columns else []) + b.rows
    height = 0.0
    margin, pdf.c_margin = pdf.c_margin, 0.0  # the table's padding replaces the cell margin
    for i, row in enumerate(rows):
        tallest = 1
        for j, text in enumerate(row):
            if b.columns and i == 0:
                pdf.set_font("DejaVu", "B", size)
            else:
                _use(pdf, _face(b, i - (1 if b.columns else 0), j, size))
            lines = cast(list[str], pdf.multi_cell(widths[j] - 2 * CELL_PAD, size * 0.47, text, dry_run=True,
                                                   output="LINES"))  # output="LINES": the wrapped lines
            tallest = max(tallest, len(lines))
        height += tallest * size * 0.47 + 2 * 0.9
    pdf.c_margin = margin
    return height


def _table(pdf: PdfPage, b: Table) -> None:
    size = SMALL_PT if b.small else BODY_PT
    key_value = not b.columns
    align = tuple({"L": "LEFT", "R": "RIGHT", "C": "CENTER"}[a] for a in b.align) if b.align else "LEFT"
    widths = _fit_widths(pdf, b, size)
    if len(b.rows) <= KEEP_TOGETHER_ROWS:
        height = _table_height(pdf, b, widths, size)
        if height > pdf.room() and height < (pdf.page_break_trigger - pdf.t_margin) * 0.6:
            pdf.add_page()  # a short table is never split over two pages
    pdf.need(min(40.0, 8 + 6 * (len(b.rows) + 1)))
    pdf.set_font("DejaVu", "", size)
    headings = FontFace(family="DejaVu", emphasis="BOLD", size_pt=size, fill_color=HEAD_FILL)
    with pdf.table(width=pdf.epw, col_widths=tuple(widths), first_row_as_headings=not key_value,
                   headings_style=headings, line_height=size * 0.47, padding=(0.9, CELL_PAD), text_align=align,
                   v_align=VAlign.T, align="LEFT", repeat_headings=1) as table:
        if not key_value:
            head = table.row()
            for c in b.columns:
                head.cell(c)
        for i, cells in enumerate(b.rows):
            row = table.row()
            for j, text in enumerate(cells):
                row.cell(text, style=_face(b, i, j, size))
    pdf.ln(3)


def _figure_size(pdf: PdfPage, b: Figure) -> tuple[float, float]:
    """Width and height in mm: the requested share of the text width, never above the image's own size at
    NATIVE_DPI (a small panel is not blown up) nor taller than MAX_FIGURE_H."""
    w_px, h_px = png_size(b.png)
    width = min(pdf.epw * b.width, w_px / NATIVE_DPI * 25.4)
    height = width * h_px / w_px
    if height > MAX_FIGURE_H:
        width, height = width * MAX_FIGURE_H / height, MAX_FIGURE_H
    return width, height


def _figure(pdf: PdfPage, b: Figure) -> None:
    width, height = _figure_size(pdf, b)
    caption_h = 10.0
    if height + caption_h > pdf.room() and (pdf.room() - caption_h) >= 0.7 * height:
        width, height = width * (pdf.room() - caption_h) / height, pdf.room() - caption_h  # shrink a little to fit
    pdf.need(height + caption_h)
    pdf.image(io.BytesIO(b.png), x=MARGIN + (pdf.epw - width) / 2, y=pdf.get_y(), w=width, h=height)
    pdf.set_y(pdf.get_y() + height + 1.5)
    pdf.set_font("DejaVu", "I", SMALL_PT)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(pdf.epw, SMALL_PT * 0.45, b.caption, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.ln(3)


SIGNATORY_H = 24.0


def _signature_height(b: Signature) -> float:
    return 50 + SIGNATORY_H * len(b.roles)


def _signature(pdf: PdfPage, b: Signature) -> None:
    """Kept on one page: intro, decision boxes, remarks lines, then per signatory a name, date and signature line."""
    pdf.need(_signature_height(b))
    pdf.text_block(b.intro)
    pdf.text_block(b.decision_label, style="B", gap=0.8)
    for d in b.decisions:
        pdf.set_x(MARGIN + 3)
        pdf.set_font("DejaVu", "", 11)
        pdf.cell(6, 5.5, "☐")
        pdf.set_font("DejaVu", "", BODY_PT)
        pdf.cell(pdf.epw - 9, 5.5, d, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.text_block(b.remarks_label, style="B", gap=0)
    pdf.set_draw_color(*GREY)
    for _ in range(3):
        pdf.ln(7)
        pdf.line(MARGIN, pdf.get_y(), pdf.w - MARGIN, pdf.get_y())
    pdf.ln(6)
    name, role, when, sign = b.labels
    gap = 6.0
    spans = [(name, 0.42), (when, 0.2), (sign, 0.38)]
    for r in b.roles:
        top = pdf.get_y()
        pdf.set_font("DejaVu", "B", BODY_PT)
        pdf.set_xy(MARGIN, top)
        pdf.cell(pdf.epw, 5, t("sign.role_of", pdf.doc.lang, role=role, name=r))
        x = MARGIN
        for label, share in spans:
            width = (pdf.epw - 2 * gap) * share
            pdf.line(x, top + 15, x + width, top + 15)
            pdf.set_font("DejaVu", "", 7.5)
            pdf.set_text_color(*GREY)
            pdf.set_xy(x, top + 15.5)
            pdf.cell(width, 3.5, label)
            x += width + gap
        pdf.set_text_color(0, 0, 0)
        pdf.set_y(top + SIGNATORY_H)
    pdf.set_draw_color(*RULE)


def _next_height(pdf: PdfPage, b: Block) -> float:
    """How much of the block after a heading must share its page (the heading is never left alone)."""
    if isinstance(b, Signature):
        return _signature_height(b)
    if isinstance(b, Figure):
        return 0.7 * _figure_size(pdf, b)[1] + 10
    if isinstance(b, Table):
        return 25.0
    return 15.0


def _block(pdf: PdfPage, b: Block) -> None:
    if isinstance(b, Title):
        _title(pdf, b)
    elif isinstance(b, Heading):
        _heading(pdf, b)
    elif isinstance(b, Paragraph):
        _paragraph(pdf, b)
    elif isinstance(b, Bullets):
        _bullets(pdf, b)
    elif isinstance(b, Callout):
        _callout(pdf, b)
    elif isinstance(b, Table):
        _table(pdf, b)
    elif isinstance(b, Figure):
        _figure(pdf, b)
    elif isinstance(b, Signature):
        _signature(pdf, b)
    elif isinstance(b, PageBreak):
        pdf.add_page()
    else:  # pragma: no cover
        raise TypeError(f"unknown block {type(b).__name__}")


def render_pdf(doc: Document) -> bytes:
    """The document as PDF bytes."""
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # its font-subsetting chatter is not the user's news
    pdf = PdfPage(doc)
    pdf.add_page()
    for i, b in enumerate(doc.blocks):
        if isinstance(b, Heading) and i + 1 < len(doc.blocks):
            pdf.need((12 if b.level == 1 else 9) + _next_height(pdf, doc.blocks[i + 1]))
        _block(pdf, b)
    return bytes(pdf.output())
