"""TOTP second factor (RFC 6238, 30 s steps, 6 digits): a thin wrapper over pyotp.

Time comes in as a number so the caller's injected clock decides it. A code is accepted for
the current step and one step either side (clock skew), and only for a step later than the
last one used: the same code never works twice.
"""

from __future__ import annotations

import hmac
from typing import Final

import pyotp

STEP_S: Final = 30
ISSUER: Final = "Shopfloor"


def new_secret() -> str:
    """A random base32 secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The otpauth:// URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=account, issuer_name=ISSUER)


def step_of(t: float) -> int:
    return int(t // STEP_S)


def code_at(secret: str, t: float) -> str:
    """The code for time ``t`` (what the user's app shows)."""
    return pyotp.TOTP(secret, interval=STEP_S).at(int(t))


def match(secret: str, code: object, t: float, last_step: int | None) -> int | None:
    """The step ``code`` belongs to (within one step of ``t``, after ``last_step``), or None."""
    if not isinstance(code, str) or len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=STEP_S)
    now = step_of(t)
    found: int | None = None
    for step in (now - 1, now, now + 1):  # all three compared: no early exit to time
        ok = hmac.compare_digest(totp.at(step * STEP_S), code)
        if ok and (last_step is None or step > last_step) and found is None:
            found = step
    return found
