"""Assemble the study report: headline, one section per model, the run's params, and provenance.

The page is built only from files the pipeline already wrote (nothing is recomputed), and images are
embedded as data URIs, so the single index.html can be mailed or archived and still show everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from gmvol.io import write_text
from gmvol.report.cohort import cohort_section, evaluation_sets_section
from gmvol.report.headline import headline_section
from gmvol.report.html import esc, page
from gmvol.report.inputs import Sources, read_model_outputs
from gmvol.report.model import model_section

TITLE = "gmvol study report"


def _anchors(names: Sequence[str]) -> dict[str, str]:
    """A unique, URL-safe HTML id per model name."""
    anchors: dict[str, str] = {}
    for i, name in enumerate(names):
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "model"
        anchors[name] = f"model-{slug}" if f"model-{slug}" not in anchors.values() else f"model-{slug}-{i}"
    return anchors


def _params_section(params: Mapping[str, Any], source: str) -> str:
    """The run's params as YAML, in file order, as the report stage read them from `source`."""
    head = f'<h2 id="params">Parameters of the run</h2><p class="legend">From {esc(source)}.</p>'
    pretty = yaml.safe_dump(dict(params), sort_keys=False, allow_unicode=True, default_flow_style=False,
                            width=100)
    return head + f"<pre>{esc(pretty)}</pre>"


def _footer(sources: Sources) -> str:
    """Generation time and every input file, read or missing."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    read = "".join(f"<li><code>{esc(p)}</code></li>" for p in sources.read)
    missing = ("<p>Not found (shown as notes above):</p><ul>"
               + "".join(f"<li><code>{esc(p)}</code></li>" for p in sources.missing) + "</ul>"
               if sources.missing else "")
    return (f"<footer><p>Generated {when} by gmvol.report from these files only "
            f"(nothing recomputed):</p><ul>{read}</ul>{missing}</footer>")


def build_report(models: list[str], eval_dir: Path, saliency_dir: Path, params: Mapping[str, Any],
                 params_source: str, out_html: Path, cohort_stats: Path | None = None,
                 montage: Path | None = None) -> None:
    """Write the self-contained study report for `models` to `out_html` (atomically); `params`
    are the run's params, as the stage read them from `params_source` (shown, not re-read);
    `cohort_stats` and `montage` are the synthesize stage's, when the study has them."""
    if not models:
        raise ValueError("build_report needs at least one model")
    if len(set(models)) != len(models):
        raise ValueError(f"model names must be unique, got {models}")
    eval_dir, saliency_dir = Path(eval_dir), Path(saliency_dir)
    sources = Sources()
    inputs = [read_model_outputs(name, eval_dir, saliency_dir, sources) for name in models]
    anchors = _anchors(models)
    nav = " ".join(f'<a href="#{anchors[m]}">{esc(m)}</a>' for m in models)
    body = (f"<h1>{esc(TITLE)}</h1>"
            f'<p class="subtitle">68 Desikan-Killiany cortical gray-matter volumes regressed from a T1 MRI: '
            f"{len(models)} model(s) against two trivial baselines on the same test set.</p>"
            f'<nav><a href="#headline">Headline</a> <a href="#heldout">Held-out anatomy</a> '
            f'<a href="#extrapolation">Size extrapolation</a> {nav} '
            f'<a href="#cohort">Cohort</a> <a href="#params">Parameters</a></nav>'
            + headline_section(inputs, anchors)
            + evaluation_sets_section(inputs, anchors)
            + "".join(model_section(m, anchors[m.name], eval_dir, saliency_dir) for m in inputs)
            + cohort_section(cohort_stats, montage, sources)
            + _params_section(params, params_source)
            + _footer(sources))
    write_text(page(TITLE, body), out_html)
