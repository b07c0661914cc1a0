"""Where the real APOGEE DR17 fixture files are: tests/data/apogee (shipped with the repository, credited
in its README.md), or $PAIRSPEC_REAL_DATA. They are part of the clone, so a missing file is an error,
not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL = Path(os.environ.get("PAIRSPEC_REAL_DATA") or Path(__file__).resolve().parent / "data" / "apogee")
MULTI_ID, SINGLE_ID = "2M17335483-2753043", "2M19485057+5005279"
MULTI, SINGLE = f"apStar-dr17-{MULTI_ID}.fits", f"apStar-dr17-{SINGLE_ID}.fits"
REQUIRES_REAL = [pytest.mark.realdata]
