"""Where the real APOGEE DR17 fixture files are (shared/data/real beside the repository, or
$PAIRSPEC_REAL_DATA), and the marks that skip cleanly, with the reason, when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL = Path(os.environ.get("PAIRSPEC_REAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "real")
MULTI_ID, SINGLE_ID = "2M17335483-2753043", "2M19485057+5005279"
MULTI, SINGLE = f"apStar-dr17-{MULTI_ID}.fits", f"apStar-dr17-{SINGLE_ID}.fits"
REQUIRES_REAL = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL / MULTI).is_file(), reason=f"real APOGEE files not found in {REAL}"),
]
