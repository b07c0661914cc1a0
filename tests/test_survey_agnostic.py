"""The core knows no survey: every survey-specific name lives under pairspec/surveys/ (issue 14)."""

import re
from pathlib import Path

from pairspec import surveys

PKG = Path(surveys.__file__).resolve().parents[1]
# the registered names, and the words that name a survey, its pipeline or its files
WORDS = {"gaia", "sdss", "aspcap", "boss", "rvs", "apstar", "allstar", "mwm", "astra", "lamost", "apogee",
         "kepler", "apokasc"}


def _core_files():
    return sorted(p for p in PKG.rglob("*.py") if "surveys" not in p.relative_to(PKG).parts)


def test_no_core_module_names_a_survey():
    names = set(surveys.available()) | set(surveys.simulators()) | WORDS
    word = re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(map(re.escape, names))) + r")", re.IGNORECASE)
    files = _core_files()
    assert len(files) > 20 and PKG / "evaluate.py" in files  # the walk sees the core
    hits = [f"{p.relative_to(PKG)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if word.search(line)]
    assert hits == [], "survey names in the core:\n" + "\n".join(hits)


def test_the_check_would_see_a_survey_name(tmp_path):
    """The pattern (a name at the start of a word, so camelCase and snake_case count) matches the ways the names appear in code (identifiers, paths, prose), so the test above
    can fail."""
    names = set(surveys.available()) | WORDS
    word = re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(map(re.escape, names))) + r")", re.IGNORECASE)
    for text in ('from pairspec.surveys.apogee import x', 'APOGEE_ID', 'ASPCAP labels', '"gaia_rvs"',
                 'demo/apogee.zarr', 'mwmStar'):
        assert word.search(text), text
    for text in ('embossed', 'survey', 'drvs'):
        assert not word.search(text), text
