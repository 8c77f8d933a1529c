# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Find a patient's identifying values left in the tags of a DICOM copy.

Plain Python (no Tryton).  :class:`PhiScanner` is built once from the
identifying values of one patient (:class:`Identity`) and scans the tag
dump of every instance of a de-identified copy, sequences and private tags
included, in any of Orthanc's three JSON forms (``/tags``,
``/tags?short``, ``/simplified-tags``).  It reports the path of each
attribute that still holds one of the values, and the kind of value, never
the value itself (the report may be shown to researchers).

Matching, after normalisation (Unicode NFKD without accents, case folded,
the DICOM separators ``^``, ``=`` and ``\\`` and any punctuation read as
spaces):

* names (patient, physicians) match word by word: a part of a name
  matches a whole word of the value (``DOE^John`` is found in
  ``CT chest for doe, JOHN``).  Parts shorter than
  :data:`MIN_NAME_PART` letters are not searched alone: a two-letter word
  (``Li``, ``Ng``) would match codes such as ``LI`` everywhere;
* identifiers (PUID, MRN, other IDs, accession number) match on their
  letters and digits only, inside any value (``PUID-123456`` is found in
  ``puid123456`` and in ``ID: PUID 123456``); an identifier shorter than
  :data:`MIN_ID_LENGTH` is not searched, and one made of digits only needs
  :data:`MIN_NUMBER_LENGTH` digits and must be a whole number of the value
  (``1234`` must not match inside ``0.1234``).  UID values are skipped for
  identifiers and dates: Orthanc replaces them, and digits of an ID could
  appear in a UID by chance;
* the birth date matches in the forms ``YYYYMMDD``, ``YYYY-MM-DD``,
  ``DD/MM/YYYY``, ``MM/DD/YYYY``, ``DD.MM.YYYY`` (all compared on digits);
* the institution matches as a phrase (all its words, in order).
"""
import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping

__all__ = ['Identity', 'Finding', 'PhiScanner', 'iter_values',
    'normalize_text', 'MIN_NAME_PART', 'MIN_ID_LENGTH', 'MIN_NUMBER_LENGTH']

MIN_NAME_PART = 3
MIN_ID_LENGTH = 4
MIN_NUMBER_LENGTH = 6
_NON_WORD = re.compile(r'[\W_]+')
_UID = re.compile(r'^[0-9]+(\.[0-9]+){3,}$')
# a whole number: not a part of a longer number or of a decimal
_NUMBER = re.compile(r'(?<!\d)(?<!\d\.)\d+(?!\d)(?!\.\d)')
_DIGIT_RUN = re.compile(r'\d+')
_DATE_DIGITS = re.compile(r'^(\d{4})-?(\d{2})-?(\d{2})$')


@dataclasses.dataclass
class Identity:
    """The identifying values of one patient, as known by the clinic.

    Names are DICOM person names (``Family^Given^Middle``) or plain text;
    ``birth_date`` is a :class:`datetime.date` or ``YYYYMMDD``.
    """
    names: list[str] = dataclasses.field(default_factory=list)
    identifiers: list[str] = dataclasses.field(default_factory=list)
    birth_date: object = None
    accession_numbers: list[str] = dataclasses.field(default_factory=list)
    institutions: list[str] = dataclasses.field(default_factory=list)
    physicians: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Finding:
    "An attribute of an instance that still holds an identifying value."
    instance: str
    path: str
    kind: str


def normalize_text(text: str) -> str:
    "Fold case and accents; DICOM separators and punctuation become spaces."
    decomposed = unicodedata.normalize('NFKD', text)
    bare = ''.join(c for c in decomposed if not unicodedata.combining(c))
    return ' '.join(_NON_WORD.split(bare.casefold())).strip()


def _compact(text):
    return normalize_text(text).replace(' ', '')


def iter_values(tags, path: str = '') -> Iterator[tuple[str, str]]:
    """Yield ``(path, text)`` for every text value of a tag dump.

    Accepts Orthanc's full form (``{"0010,0010": {"Name": ..., "Type":
    "String", "Value": ...}}``), the short form and the simplified form;
    sequence items are ``[index]`` in the path: ``0008,1110[0].0008,1150``.
    """
    for key, value in tags.items():
        name = key
        if isinstance(value, Mapping) and 'Type' in value:
            name = '%s %s' % (key, value['Name']) if value.get('Name') \
                else key
            value = value.get('Value')
        where = '%s.%s' % (path, name) if path else name
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from iter_values(item, '%s[%d]' % (where, index))
                elif isinstance(item, str):
                    yield '%s[%d]' % (where, index), item


class PhiScanner:
    """Scan tag dumps for the values of one :class:`Identity`."""

    def __init__(self, identity: Identity):
        self.words = {}     # one word -> kind
        self.phrases = []   # (normalised phrase, kind)
        self.ids = []       # (compact id, kind)
        self.numbers = {}   # digits-only id -> kind
        self.dates = {}     # 8 digits -> kind
        for name in identity.names:
            self._add_name(name, 'patient name')
        for name in identity.physicians:
            self._add_name(name, 'physician name')
        for value in identity.identifiers:
            self._add_id(value, 'patient identifier')
        for value in identity.accession_numbers:
            self._add_id(value, 'accession number')
        for value in identity.institutions:
            text = normalize_text(value or '')
            if len(text.replace(' ', '')) >= MIN_ID_LENGTH:
                self.phrases.append((' %s ' % text, 'institution'))
        if identity.birth_date:
            self._add_birth_date(identity.birth_date)
        self._cache = {}

    def _add_name(self, name, kind):
        for word in normalize_text(name or '').split():
            if len(word) >= MIN_NAME_PART:
                self.words.setdefault(word, kind)

    def _add_id(self, value, kind):
        compact = _compact(value or '')
        if compact.isdigit():
            if len(compact) >= MIN_NUMBER_LENGTH:
                self.numbers.setdefault(compact, kind)
            return
        if len(compact) >= MIN_ID_LENGTH:
            self.ids.append((compact, kind))
        # the number inside an ID (PUID-123456) is identifying alone
        for run in _DIGIT_RUN.findall(compact):
            if len(run) >= MIN_NUMBER_LENGTH:
                self.numbers.setdefault(run, kind)

    def _add_birth_date(self, value):
        text = value.strftime('%Y%m%d') if hasattr(value, 'strftime') \
            else str(value)
        match = _DATE_DIGITS.match(text.strip())
        if not match:
            return
        year, month, day = match.groups()
        for digits in (year + month + day, day + month + year,
                month + day + year):
            self.dates[digits] = 'birth date'

    def match(self, text: str) -> str | None:
        "Return the kind of identifying value found in ``text``, or None."
        if text in self._cache:
            return self._cache[text]
        kind = self._match(text)
        if len(self._cache) < 100_000:
            self._cache[text] = kind
        return kind

    def _match(self, text):
        normal = normalize_text(text)
        if not normal or _UID.match(text.strip()):
            return None
        for word in normal.split():
            if word in self.words:
                return self.words[word]
        spaced = ' %s ' % normal
        for phrase, kind in self.phrases:
            if phrase in spaced:
                return kind
        digits = ''.join(_DIGIT_RUN.findall(normal))
        for date, kind in self.dates.items():
            if date in digits:
                return kind
        compact = normal.replace(' ', '')
        for value, kind in self.ids:
            if value in compact:
                return kind
        for run in _NUMBER.findall(text):
            if run in self.numbers:
                return self.numbers[run]
        return None

    def scan(self, instance: str, tags: Mapping) -> list[Finding]:
        "Return the findings in the tag dump of one instance."
        findings = []
        for path, text in iter_values(tags):
            kind = self.match(text)
            if kind:
                findings.append(Finding(instance, path, kind))
        return findings

    def scan_many(self, dumps: Iterable[tuple[str, Mapping]]
            ) -> list[Finding]:
        "Scan ``(instance ID, tag dump)`` pairs; return all findings."
        findings = []
        for instance, tags in dumps:
            findings.extend(self.scan(instance, tags))
        return findings
