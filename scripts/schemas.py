#!/usr/bin/env python3
"""Rewrite docs/schemas/ from the typed records and the views' field lists
(roar/query/schemas.py). Run it after changing a record or a view;
tests/test_schemas.py fails while the published files are stale."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roar.query.schemas import write_all  # noqa: E402

for path in write_all():
    print(f"wrote {path}")
