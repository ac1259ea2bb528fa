"""Helpers for the report tests: a small real federation, attack results, a tampered copy of a site, PDF text.

The federation is the real one (tests/federation_harness.py: server, strategy,
ClientApp and site code unchanged, DP-SGD and CKKS), on the session's test
cohort, so a report is made from exactly what a site writes.
"""

from __future__ import annotations

import html
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pypdf
import yaml
from federation_harness import LocalGrid, make_federation, run

from flame_private.attacks.result import AttackArm, AttackResult
from flame_private.config import HEConfig
from flame_private.secure.site.ceremony import key_ceremony


@dataclass
class Federation:
    root: Path
    keys: Path
    sites: dict[str, Path]
    """Site id -> site YAML."""
    summary: dict

    def state(self, site_id: str) -> Path:
        return self.sites[site_id].parent / "state"


def build_federation(root: Path, cohort_dir: Path, *, n_sites: int = 4, rounds: int = 2,
                     tasks: str = "[response, evolution]", caps: dict[str, float] | None = None) -> Federation:
    keys = root / "keys"
    key_ceremony(HEConfig(), keys)
    sites, fed = make_federation(root, cohort_dir, keys, n_sites=n_sites, rounds=rounds, caps=caps, tasks=tasks)
    summary = run(LocalGrid(sites, fed), fed, keys, root / "run")
    return Federation(root=root, keys=keys, sites=sites, summary=summary)


def copy_site(site_yaml: Path, dest: Path) -> Path:
    """A copy of a site's state and config under ``dest`` (to damage without touching the shared one)."""
    cfg = yaml.safe_load(site_yaml.read_text())
    shutil.copytree(Path(cfg["state_dir"]), dest / "state")
    cfg["state_dir"] = str(dest / "state")
    out = dest / "site.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def flip_one_byte(path: Path, line: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length, one byte apart) on 1-based ``line`` of a JSON-lines file."""
    assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1
    lines = path.read_bytes().splitlines(keepends=True)
    assert old in lines[line - 1], (old, lines[line - 1][:200])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_bytes(b"".join(lines))


def png(width: int = 320, height: int = 160) -> bytes:
    """A small real PNG (what an attack writes beside its JSON)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 80, height / 80), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow([[0, 1], [1, 0]], cmap="gray")
    ax.set_title("original | reconstruction")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def gradient_inversion(*, protection_held: bool = True, figure: str | None = "inversion-panel.png") -> AttackResult:
    return AttackResult(
        attack="gradient-inversion", title="Gradient inversion of one site's update",
        summary="A curious server tries to rebuild a patient's MRI from the site's update. Without protection the "
                "scan is recognisable; with DP-SGD and encryption it is not.",
        seed=7, size="ci", seconds=12.5,
        arms=[AttackArm(name="no DP, plaintext update", protection="none", is_control=True, attack_succeeded=True,
                        metrics={"ssim": 0.91, "psnr_db": 27.4}, detail="The reconstruction shows the tumour."),
              AttackArm(name="DP-SGD + CKKS", protection="dp+he", is_control=False,
                        attack_succeeded=not protection_held, metrics={"ssim": 0.04, "psnr_db": 6.1})],
        figures=[figure] if figure else [], accounted_epsilon=2.5)


def membership_inference() -> AttackResult:
    return AttackResult(
        attack="membership-inference", title="Membership inference on the published model",
        summary="An attacker with the final model guesses which patients were in training.",
        seed=7, size="ci", seconds=3.0,
        arms=[AttackArm(name="no DP", protection="none", is_control=True, attack_succeeded=True,
                        metrics={"auc": 0.97, "tpr_at_1pct_fpr": 0.62}),
              AttackArm(name="DP-SGD", protection="dp", is_control=False, attack_succeeded=False,
                        metrics={"auc": 0.51, "tpr_at_1pct_fpr": 0.012})],
        accounted_epsilon=3.1)


def write_attacks(folder: Path, *results: AttackResult) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        r.write(folder / f"{r.attack}.json")
        for name in r.figures:
            (folder / name).write_bytes(png())
    return folder


def pdf_text(data: bytes | Path) -> str:
    """Every page's text, whitespace (including non-breaking spaces) collapsed to single spaces."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    reader = pypdf.PdfReader(io.BytesIO(raw))
    return re.sub(r"\s+", " ", "\n".join(p.extract_text() for p in reader.pages).replace("\u00a0", " "))


def pdf_images(data: bytes) -> int:
    return sum(len(p.images) for p in pypdf.PdfReader(io.BytesIO(data)).pages)


def html_text(data: bytes) -> str:
    """The HTML's visible text: tags removed, entities decoded, whitespace collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", data.decode("utf-8")))
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))
