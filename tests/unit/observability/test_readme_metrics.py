"""The README lists every metric the code exports (the operator's reference: README, "Metrics")."""

from __future__ import annotations

import re
from pathlib import Path

from switchboard.observability.metrics import CATALOGUE

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_metric_with_its_labels() -> None:
    text = README.read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([a-z_:]+)` \| \w+ \| ([^|]*) \|", text, re.M)
    }
    missing = sorted(set(CATALOGUE) - set(rows))
    assert not missing, f"README.md does not list: {missing}"
    stale = sorted(set(rows) - set(CATALOGUE))
    assert not stale, f"README.md lists metrics the code does not export: {stale}"
    for name, spec in CATALOGUE.items():
        listed = re.findall(r"`([a-z_]+)`", rows[name])
        assert listed == list(spec.labels), (
            f"{name}: README labels {listed}, code {list(spec.labels)}"
        )
