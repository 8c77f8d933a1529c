# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pseudonyms and date shifts of the subjects of a research project.

Plain Python (no Tryton).  A pseudonym is random, never computed from the
patient's identifiers: only the register (who is who) links the two, so it
is stable because the register stores it, not because it can be computed
again.  Format: ``PREFIX-XXXXXXXX-C``, where ``XXXXXXXX`` is random in
Crockford's base 32 (no I, L, O, U: readable, no look-alikes) and ``C`` a
Luhn mod 32 check character that catches a mistyped character or two
swapped neighbours.  It is valid as a DICOM PatientID (LO) and PatientName
(PN: no ``^``, ``=`` or ``\\``).
"""
import re
import secrets
from collections.abc import Container

__all__ = ['ALPHABET', 'PseudonymError', 'check_character', 'new_pseudonym',
    'is_valid_pseudonym', 'normalize_prefix', 'new_date_shift']

ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
RANDOM_LENGTH = 8
MAX_TRIES = 100
_PREFIX = re.compile(r'^[A-Z0-9]{1,12}$')


class PseudonymError(ValueError):
    "A pseudonym or a date shift cannot be made as asked."


def check_character(text: str) -> str:
    """Return the Luhn mod 32 check character of ``text`` (in ALPHABET)."""
    total, factor = 0, 2
    for char in reversed(text):
        addend = factor * ALPHABET.index(char)
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def normalize_prefix(prefix: str) -> str:
    """Return the project prefix in upper case; refuse other characters."""
    text = (prefix or '').strip().upper()
    if not _PREFIX.match(text):
        raise PseudonymError(
            'the prefix must be 1 to 12 letters A-Z or digits: %r' % prefix)
    return text


def new_pseudonym(prefix: str, taken: Container[str] = (),
        random_length: int = RANDOM_LENGTH) -> str:
    """Return a new random pseudonym not in ``taken``.

    ``taken`` holds the pseudonyms already in the register (any project:
    the caller decides the scope).  With 8 random characters (40 bits) a
    collision is rare; after ``MAX_TRIES`` the register is too full for
    that length and :class:`PseudonymError` is raised.
    """
    prefix = normalize_prefix(prefix)
    for _ in range(MAX_TRIES):
        body = ''.join(secrets.choice(ALPHABET)
            for _ in range(random_length))
        pseudonym = '%s-%s-%s' % (prefix, body, check_character(body))
        if pseudonym not in taken:
            return pseudonym
    raise PseudonymError(
        'no free pseudonym after %d tries: use longer pseudonyms'
        % MAX_TRIES)


def is_valid_pseudonym(text: str, prefix: str | None = None) -> bool:
    """Tell whether ``text`` has the format and a right check character."""
    parts = (text or '').split('-')
    if len(parts) != 3:
        return False
    head, body, check = parts
    if prefix is not None and head != prefix.upper():
        return False
    if not _PREFIX.match(head) or not body or len(check) != 1:
        return False
    if any(c not in ALPHABET for c in body + check):
        return False
    return check_character(body) == check


def new_date_shift(min_days: int, max_days: int, rng=None) -> int:
    """Return a random whole number of days in ``[min_days, max_days]``.

    Uniform over the allowed values, and never 0: a shift of 0 days would
    leave the true dates.  A range holding only 0 (or reversed) is refused.
    """
    if min_days > max_days:
        raise PseudonymError('the date shift range is reversed: %d > %d'
            % (min_days, max_days))
    rng = rng or secrets.SystemRandom()
    size = max_days - min_days + 1
    holds_zero = min_days <= 0 <= max_days
    if holds_zero:
        size -= 1
    if size < 1:
        raise PseudonymError('the date shift range must allow a day other '
            'than 0')
    shift = min_days + rng.randrange(size)
    if holds_zero and shift >= 0:
        shift += 1
    return shift
