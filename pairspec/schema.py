"""Label schemas: which labels a survey provides, their units, valid ranges and source columns."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Label:
    name: str  # lower-case catalogue name: teff, logg, fe_h, mg_fe ...
    unit: str  # "K", "dex" (log g in cgs dex), ...
    lo: float  # physically valid range; values outside are treated as missing
    hi: float
    column: str  # survey summary-table column, e.g. "TEFF"
    err_column: str  # e.g. "TEFF_ERR"
    flag_column: str = ""  # e.g. "FE_H_FLAG"; "" when the survey has none


@dataclass(frozen=True)
class LabelSchema:
    survey: str
    labels: tuple[Label, ...]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def units(self) -> list[str]:
        return [lab.unit for lab in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def clean(self, values: np.ndarray) -> np.ndarray:
        """Return float32 copy with non-finite, sentinel (-9999) and out-of-range values set to NaN."""
        v = np.array(values, dtype=np.float32, copy=True)
        lo = np.array([lab.lo for lab in self.labels], dtype=np.float32)
        hi = np.array([lab.hi for lab in self.labels], dtype=np.float32)
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        v[bad] = np.nan
        return v

    def subset(self, names: list[str]) -> LabelSchema:
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise KeyError(f"labels {unknown} not in the {self.survey} schema {self.names}")
        return LabelSchema(self.survey, tuple(self.labels[self.index(n)] for n in names))

    def to_dict(self) -> dict:
        return {"survey": self.survey, "labels": [asdict(lab) for lab in self.labels]}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSchema:
        return cls(d["survey"], tuple(Label(**lab) for lab in d["labels"]))
