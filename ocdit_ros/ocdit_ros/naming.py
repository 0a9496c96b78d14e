"""BOP object names (`obj_000005` <-> 5): the one pair of functions that formats and parses them."""

from __future__ import annotations

import re

_BOP_NAME = re.compile(r"^obj_(\d+)$")


def obj_name(obj_id: int) -> str:
    """The BOP name of an object id: models/obj_000005.ply, templates/obj_000005.npz."""
    return f"obj_{int(obj_id):06d}"


def obj_id_of(name: str) -> int | None:
    """The id in a BOP object name (obj_000005 -> 5), None for any other name."""
    m = _BOP_NAME.match(name)
    return int(m.group(1)) if m else None
