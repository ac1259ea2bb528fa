"""A document as one self-contained HTML file: inline CSS, plots embedded as base64 PNG, nothing fetched.

It opens in any browser and prints to A4 with page breaks kept out of tables
rows and figures.  Every text is escaped.
"""

from __future__ import annotations

import base64
from html import escape

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
)

CSS = """
@page { size: A4; margin: 16mm 15mm 18mm 15mm; }
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; font-size: 10.5pt; color: #1b1b1b;
       max-width: 190mm; margin: 0 auto; padding: 12px 16px 24px; line-height: 1.45; }
h1 { font-size: 20pt; margin: 4px 0 2px; color: #123a66; }
.subtitle { font-size: 12pt; color: #444; margin: 0 0 12px; }
h2 { font-size: 13.5pt; color: #123a66; border-bottom: 1.5px solid #123a66; padding-bottom: 2px; margin: 22px 0 8px;
     page-break-after: avoid; }
h3 { font-size: 11pt; color: #123a66; margin: 14px 0 6px; page-break-after: avoid; }
p { margin: 6px 0; }
p.small, .small td, .small th { font-size: 8.5pt; }
p.small { color: #444; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #9aa5b1; padding: 3px 5px; vertical-align: top; text-align: left; }
thead th { background: #e3e9f0; }
table.kv th { background: #f2f5f8; width: 40%; font-weight: bold; }
td.R { text-align: right; } td.C { text-align: center; }
.mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 8pt; word-break: break-all; }
tr.fail td, tr.fail th { background: #fbe3e1; } tr.attention td, tr.attention th { background: #fff4d6; }
tr.info td, tr.info th { background: #eef2f6; font-weight: bold; } tr.ok td { background: #e6f4ea; }
.callout { border: 1.5px solid; border-left-width: 6px; padding: 6px 10px; margin: 10px 0; page-break-inside: avoid; }
.callout p { margin: 2px 0; font-weight: bold; }
.callout ul { margin: 4px 0 2px 18px; padding: 0; }
.callout.ok { border-color: #2e8b57; background: #e6f4ea; }
.callout.attention { border-color: #d9a400; background: #fff4d6; }
.callout.fail { border-color: #c0392b; background: #fbe3e1; }
.callout.info { border-color: #1f5fa8; background: #eaf1fb; }
.callout .detail { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 8pt; font-weight: normal;
                   white-space: pre-wrap; word-break: break-all; margin-top: 4px; }
figure { margin: 10px 0; text-align: center; page-break-inside: avoid; }
figure img { max-width: 100%; }
figcaption { font-size: 9pt; color: #444; font-style: italic; }
.signature .decision { margin: 6px 0 0; } .signature .box { font-size: 12pt; margin-right: 4px; }
.signature .lines { border-bottom: 1px solid #555; height: 22px; }
.signatory { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 24px; margin: 14px 0; page-break-inside: avoid; }
.signatory div { border-bottom: 1px solid #555; padding-top: 18px; font-size: 8.5pt; color: #444; }
.signatory .role { color: #1b1b1b; font-weight: bold; }
.pagebreak { page-break-after: always; }
footer { margin-top: 28px; border-top: 1px solid #9aa5b1; padding-top: 4px; font-size: 8.5pt; color: #555; }
"""


def _text(s: str) -> str:
    return escape(s).replace("\n", "<br>")


def _table(b: Table) -> str:
    cls = "kv" if not b.columns else "data"
    out = [f'<table class="{cls}{" small" if b.small else ""}">',
           "<colgroup>" + "".join(f'<col style="width:{100 * w / sum(b.widths):.1f}%">' for w in b.widths)
           + "</colgroup>"]
    if b.columns:
        out.append("<thead><tr>" + "".join(f"<th>{_text(c)}</th>" for c in b.columns) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(b.rows):
        tone = b.tones[i] if i < len(b.tones) and b.tones[i] else ""
        cells = []
        for j, cell in enumerate(row):
            classes = " ".join(c for c in ((b.align[j] if j < len(b.align) and b.align[j] != "L" else ""),
                                           "mono" if j in b.mono else "") if c)
            attr = f' class="{classes}"' if classes else ""
            tag = "th" if not b.columns and j == 0 else "td"
            cells.append(f"<{tag}{attr}>{_text(cell)}</{tag}>")
        out.append(f'<tr class="{tone}">' + "".join(cells) + "</tr>" if tone else "<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _block(b: Block) -> str:
    if isinstance(b, Title):
        rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in b.facts)
        return (f'<header><h1>{_text(b.title)}</h1><p class="subtitle">{_text(b.subtitle)}</p>'
                f'<table class="kv"><tbody>{rows}</tbody></table></header>')
    if isinstance(b, Heading):
        tag = "h2" if b.level == 1 else "h3"
        return f"<{tag}>{_text(b.text)}</{tag}>"
    if isinstance(b, Paragraph):
        return f'<p class="{b.style}">{_text(b.text)}</p>' if b.style != "normal" else f"<p>{_text(b.text)}</p>"
    if isinstance(b, Bullets):
        tag = "ol" if b.numbered else "ul"
        return f"<{tag}>" + "".join(f"<li>{_text(i)}</li>" for i in b.items) + f"</{tag}>"
    if isinstance(b, Callout):
        items = ("<ul>" + "".join(f"<li>{_text(i)}</li>" for i in b.items) + "</ul>") if b.items else ""
        detail = "".join(f'<div class="detail">{escape(d)}</div>' for d in b.detail if d)
        return f'<div class="callout {b.tone}"><p>{_text(b.text)}</p>{items}{detail}</div>'
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        return (f'<figure><img alt="{escape(b.caption)}" style="max-width:{100 * b.width:.0f}%" '
                f'src="data:image/png;base64,{data}"><figcaption>{_text(b.caption)}</figcaption></figure>')
    if isinstance(b, Signature):
        boxes = "".join(f'<div class="decision"><span class="box">☐</span>{_text(d)}</div>' for d in b.decisions)
        name, role, date, sign = (_text(x) for x in b.labels)
        people = "".join(
            f'<div class="signatory"><div>{name}</div><div class="role">{role}: {_text(r)}</div>'
            f"<div>{date}</div><div>{sign}</div></div>" for r in b.roles)
        return (f'<section class="signature"><p>{_text(b.intro)}</p><p><strong>{_text(b.decision_label)}</strong>'
                f'</p>{boxes}<p><strong>{_text(b.remarks_label)}</strong></p>'
                f'<div class="lines"></div><div class="lines"></div><div class="lines"></div>{people}</section>')
    if isinstance(b, PageBreak):
        return '<div class="pagebreak"></div>'
    raise TypeError(f"unknown block {type(b).__name__}")  # pragma: no cover


def render_html(doc: Document) -> bytes:
    """The document as UTF-8 HTML bytes."""
    body = "\n".join(_block(b) for b in doc.blocks)
    meta = "".join(f'<meta name="{escape(k)}" content="{escape(v)}">\n' for k, v in doc.metadata.items())
    page = (f'<!DOCTYPE html>\n<html lang="{doc.lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n{meta}'
            f"<title>{escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<footer>{escape(doc.footer)}</footer>\n</body>\n</html>\n")
    return page.encode("utf-8")
