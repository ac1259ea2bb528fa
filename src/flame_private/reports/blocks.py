"""The layout of a report as a list of blocks, so HTML and PDF say exactly the same thing.

A document is built once per language from the report's facts
(``ethics_doc``, ``consortium_doc``); ``html`` and ``pdf`` only decide how each
block looks.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from flame_private.config import StrictModel
from flame_private.reports.i18n import Lang

Tone = Literal["ok", "attention", "fail", "info"]
Align = Literal["L", "R", "C"]


class Title(StrictModel):
    """The title page's heading and identity table."""

    kind: Literal["title"] = "title"
    title: str
    subtitle: str
    facts: list[tuple[str, str]]


class Heading(StrictModel):
    kind: Literal["heading"] = "heading"
    text: str
    level: Literal[1, 2] = 1


class Paragraph(StrictModel):
    kind: Literal["paragraph"] = "paragraph"
    text: str
    style: Literal["normal", "small", "mono"] = "normal"


class Bullets(StrictModel):
    kind: Literal["bullets"] = "bullets"
    items: list[str]
    numbered: bool = False


class Callout(StrictModel):
    """A boxed statement: the verdict, a failed chain, an attack's outcome."""

    kind: Literal["callout"] = "callout"
    tone: Tone
    text: str
    items: list[str] = Field(default_factory=list)
    detail: list[str] = Field(default_factory=list)
    """Technical lines (the software's English messages), set smaller."""


class Table(StrictModel):
    kind: Literal["table"] = "table"
    columns: list[str]
    """Headings; empty for a key-value table (two columns, the first bold)."""
    rows: list[list[str]]
    widths: list[float]
    """Relative column widths."""
    align: list[Align] = Field(default_factory=list)
    mono: list[int] = Field(default_factory=list)
    """Columns set in a monospaced font (hashes)."""
    tones: list[Tone | None] = Field(default_factory=list)
    """Per row: a background that marks a problem or a total."""
    small: bool = False


class Figure(StrictModel):
    kind: Literal["figure"] = "figure"
    png: bytes
    caption: str
    width: float = 1.0
    """Fraction of the text width."""


class Signature(StrictModel):
    """The sign-off block: decision boxes, remarks lines and one name/role/date/signature block per signatory."""

    kind: Literal["signature"] = "signature"
    intro: str
    decision_label: str
    decisions: list[str]
    remarks_label: str
    labels: tuple[str, str, str, str]
    """Name, role, date, signature."""
    roles: list[str]


class PageBreak(StrictModel):
    kind: Literal["pagebreak"] = "pagebreak"


Block = Annotated[Title | Heading | Paragraph | Bullets | Callout | Table | Figure | Signature | PageBreak,
                  Field(discriminator="kind")]


class Document(StrictModel):
    lang: Lang
    title: str
    header: str
    """Running header of every page after the first."""
    footer: str
    """Left part of the footer (site and date); the page number is added by the renderer."""
    blocks: list[Block]
    metadata: dict[str, str] = Field(default_factory=dict)
    """Machine-readable facts of the file (the chain heads): HTML meta tags, PDF keywords."""

    def text(self) -> str:
        """Every word of the document, in order (what a reader sees, without the layout)."""
        out: list[str] = [self.title]
        for b in self.blocks:
            if isinstance(b, Title):
                out += [b.title, b.subtitle, *(f"{k}: {v}" for k, v in b.facts)]
            elif isinstance(b, (Heading, Paragraph)):
                out.append(b.text)
            elif isinstance(b, Bullets):
                out += b.items
            elif isinstance(b, Callout):
                out += [b.text, *b.items, *b.detail]
            elif isinstance(b, Table):
                out += [" | ".join(b.columns), *(" | ".join(r) for r in b.rows)]
            elif isinstance(b, Figure):
                out.append(b.caption)
            elif isinstance(b, Signature):
                out += [b.intro, b.decision_label, *b.decisions, b.remarks_label, *b.labels, *b.roles]
        return "\n".join(out)
