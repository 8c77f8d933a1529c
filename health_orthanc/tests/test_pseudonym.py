# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the pseudonyms and date shifts of research subjects."""
import collections
import random
import re

import pytest

from trytond.modules.health_orthanc.pseudonym import (
    ALPHABET, PseudonymError, check_character, is_valid_pseudonym,
    new_date_shift, new_pseudonym, normalize_prefix)


@pytest.mark.parametrize('prefix, expected', [
    ('trial1', 'TRIAL1'), (' ABC ', 'ABC'), ('X', 'X')])
def test_normalize_prefix(prefix, expected):
    assert normalize_prefix(prefix) == expected


@pytest.mark.parametrize('prefix', [
    '', None, 'A-B', 'A^B', 'ÉTUDE', 'A' * 13, 'A B'])
def test_bad_prefix(prefix):
    with pytest.raises(PseudonymError):
        normalize_prefix(prefix)


def test_format_and_check():
    pseudonym = new_pseudonym('trial')
    assert re.match(r'^TRIAL-[0-9A-HJKMNP-TV-Z]{8}-[0-9A-HJKMNP-TV-Z]$',
        pseudonym)
    assert is_valid_pseudonym(pseudonym, 'TRIAL')
    assert not is_valid_pseudonym(pseudonym, 'OTHER')
    # valid as PN: no component separators
    assert not set(pseudonym) & set('^=\\')


def test_random_not_derived():
    "Two draws differ: nothing is computed from the patient"
    assert len({new_pseudonym('T') for _ in range(200)}) == 200


def test_collision_checked():
    "A taken pseudonym is drawn again"
    taken = set()
    for _ in range(300):
        taken.add(new_pseudonym('T', taken, random_length=2))
    assert len(taken) == 300


def test_register_full():
    taken = {'T-%s-%s' % (c, check_character(c)) for c in ALPHABET}
    with pytest.raises(PseudonymError):
        new_pseudonym('T', taken, random_length=1)


@pytest.mark.parametrize('text', [
    '', None, 'T-ABCD', 'T-ABCD-E-F', 'T--0', 'T-ABCI-0', 'T-abcd-0'])
def test_malformed(text):
    assert not is_valid_pseudonym(text)


def test_check_character_catches_typos():
    "Every single substitution and every swap of neighbours is caught"
    body = 'K3M9Q2XZ'
    check = check_character(body)
    for i in range(len(body)):
        for c in ALPHABET:
            if c != body[i]:
                typo = body[:i] + c + body[i + 1:]
                assert not is_valid_pseudonym('T-%s-%s' % (typo, check))
    for i in range(len(body) - 1):
        if body[i] != body[i + 1]:
            swapped = body[:i] + body[i + 1] + body[i] + body[i + 2:]
            assert not is_valid_pseudonym('T-%s-%s' % (swapped, check))


@pytest.mark.parametrize('low, high, allowed', [
    (-365, -30, set(range(-365, -29))),
    (30, 40, set(range(30, 41))),
    (-3, 3, {-3, -2, -1, 1, 2, 3}),
    (0, 2, {1, 2}),
    (-1, 0, {-1}),
    (7, 7, {7}),
    ])
def test_date_shift_range(low, high, allowed):
    rng = random.Random(1)
    draws = [new_date_shift(low, high, rng) for _ in range(3000)]
    assert set(draws) == allowed
    assert 0 not in draws


def test_date_shift_uniform():
    rng = random.Random(2)
    counts = collections.Counter(
        new_date_shift(-2, 2, rng) for _ in range(40000))
    for value in (-2, -1, 1, 2):
        assert 9500 < counts[value] < 10500


@pytest.mark.parametrize('low, high', [(0, 0), (5, 1)])
def test_date_shift_refused(low, high):
    with pytest.raises(PseudonymError):
        new_date_shift(low, high)


def test_date_shift_default_random():
    assert -10 <= new_date_shift(-10, 10) <= 10
