"""docs/metrics.md, the code catalogue, the dashboard and the alert rules name the same metrics."""

from __future__ import annotations

import re
from pathlib import Path

from switchboard.observability.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "metrics.md"


def doc_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z_:]+)` \| (counter|gauge|histogram) \| ([^|]*) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    rows = doc_rows()
    for name, spec in CATALOGUE.items():
        assert name in rows, f"{name} missing from docs/metrics.md"
        kind, labels = rows[name]
        assert kind == spec.kind, name
        documented = tuple(re.findall(r"`(\w+)`", labels))
        assert documented == spec.labels, f"{name}: doc says {documented}, code says {spec.labels}"
    assert set(rows) == set(CATALOGUE), "docs/metrics.md lists metrics the code does not export"


def test_catalogue_is_well_formed() -> None:
    for name, spec in CATALOGUE.items():
        assert re.fullmatch(r"(voip|switchboard)_[a-z0-9_]+", name), name
        assert (spec.kind == "counter") == name.endswith("_total"), name
        assert all(isinstance(label, str) and label.isidentifier() for label in spec.labels), name
        assert (spec.kind == "histogram") == bool(spec.buckets), name
        assert list(spec.buckets) == sorted(spec.buckets), name
        # never a per-call or per-number label (unbounded series)
        assert not {"call_id", "number", "caller", "ip", "source"} & set(spec.labels), name
    pdd = CATALOGUE["switchboard_media_pdd_seconds"].buckets
    assert 3.0 in pdd and 7.0 in pdd


def test_doc_tables_are_generated_from_the_catalogue() -> None:
    from switchboard.observability.metrics import markdown_tables

    assert markdown_tables() in DOC.read_text(), (
        "regenerate the tables: python -c 'from switchboard.observability.metrics import "
        "markdown_tables; print(markdown_tables())'"
    )
