"""Point quality as OPC UA status codes (Part 4, 7.34): the top two bits give the severity."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

GOOD: Final = 0x00000000
UNCERTAIN: Final = 0x40000000
BAD: Final = 0x80000000

NAMES: Final = {"good": GOOD, "uncertain": UNCERTAIN, "bad": BAD}


def severity(codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.str_]:
    """Map status codes to 'good' / 'uncertain' / 'bad' by their severity bits."""
    sev = codes >> np.uint32(30)
    out = np.full(codes.shape, "good", dtype="<U9")
    out[sev == 1] = "uncertain"
    out[sev >= 2] = "bad"
    return out


def name_of(code: int) -> str:
    sev = code >> 30
    return "good" if sev == 0 else "uncertain" if sev == 1 else "bad"
