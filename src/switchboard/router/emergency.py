"""Emergency numbers at the edge (docs/compliance.md "Emergency calls").

``[emergency] numbers`` maps a country (the ``country`` of a trunk, ISO 3166 alpha-2) to
its emergency numbers; the ``"*"`` entry applies to every trunk, and a trunk without a
country gets every number listed. A new INVITE whose Request-URI user (after the trunk's
tech prefix) is one of them is an emergency call: the router never refuses it for
flooding, load or trunk limits, leaves its numbers as they came, and sends it to the
emergency route first.

Pure: sets of strings, no IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ANY = "*"


class EmergencyNumbers:
    """Which dialled numbers are emergency calls, per country."""

    __slots__ = ("all", "by_country", "common")

    def __init__(self, numbers: Mapping[str, Sequence[str]]) -> None:
        self.common = frozenset(n.strip() for n in numbers.get(ANY, ()))
        self.by_country = {
            c.upper(): frozenset(n.strip() for n in v) | self.common
            for c, v in numbers.items()
            if c != ANY
        }
        self.all = frozenset(self.common.union(*self.by_country.values()))

    def __bool__(self) -> bool:
        return bool(self.all)

    def match(self, dialled: str, country: str = "") -> bool:
        """Is ``dialled`` an emergency number for a caller in ``country`` ("" = any)?"""
        if not country:
            return dialled in self.all
        return dialled in self.by_country.get(country.upper(), self.common)


def validate(numbers: Mapping[str, Sequence[str]]) -> None:
    """ValueError naming ``emergency.numbers.<country>`` for a malformed entry."""
    for country, values in numbers.items():
        if country != ANY and not (len(country) == 2 and country.isalpha()):
            raise ValueError(
                f"emergency.numbers.{country}: a country is an ISO 3166 alpha-2 code or '*'"
            )
        for n in values:
            if not n.strip().isdigit() or len(n.strip()) > 6:
                raise ValueError(f"emergency.numbers.{country}: {n!r} is not a short number")
