"""Password hashing (argon2id) and the password policy.

The hash parameters are OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): about 30 ms per
hash on a small server, so a login stays quick while an offline guesser pays for every try.
The parameters travel inside each hash, so raising them later still verifies old hashes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput

MAX_LENGTH: Final = 1024  # argon2 takes any length; this bounds the work per request
PASSPHRASE_LENGTH: Final = 20  # a passphrase this long needs no mix of character classes
_CLASSES: Final = (re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]"))


def default_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def verify(hasher: PasswordHasher, hashed: str, password: str) -> bool:
    """Whether ``password`` matches ``hashed`` (False on a malformed hash, never raises)."""
    try:
        return hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def character_classes(password: str) -> int:
    """How many of lower case, upper case, digits and other characters appear."""
    n = sum(1 for c in _CLASSES if c.search(password))
    if re.search(r"[^a-zA-Z0-9]", password):
        n += 1
    return n


def check_policy(
    password: object,
    username: str,
    settings: Settings,
    *,
    hasher: PasswordHasher | None = None,
    earlier: Sequence[str] = (),
) -> str:
    """``password`` if the policy accepts it, else BadInput (field "password") saying why.

    ``earlier`` are the hashes of the user's recent passwords, newest first; the new one may
    be none of the last ``settings.password_history``.
    """
    if not isinstance(password, str):
        raise BadInput("password must be a string", "password")
    if len(password) < settings.password_min_length:
        raise BadInput(
            f"password must be at least {settings.password_min_length} characters", "password"
        )
    if len(password) > MAX_LENGTH:
        raise BadInput(f"password must be at most {MAX_LENGTH} characters", "password")
    if len(password) < PASSPHRASE_LENGTH and character_classes(password) < 3:
        raise BadInput(
            "password needs 3 of: lower case, upper case, digits, other characters "
            f"(or be a passphrase of {PASSPHRASE_LENGTH}+ characters)",
            "password",
        )
    if username and username.lower() in password.lower():
        raise BadInput("password must not contain the username", "password")
    if hasher is not None and settings.password_history:
        for old in earlier[: settings.password_history]:
            if verify(hasher, old, password):
                raise BadInput(
                    f"password must differ from the last {settings.password_history} passwords",
                    "password",
                )
    return password
