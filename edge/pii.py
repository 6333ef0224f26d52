"""Personal data out of what leaves the device: found by Presidio, replaced by placeholders, put back in the answer.

Before a question and its passages are sealed for the cloud, :class:`Redactor` finds personal data in them with
Presidio's recognizers (presidio-analyzer) and replaces each value with a placeholder (presidio-anonymizer, one
custom operator): ``<PERSON_1>`` is the same person in the question, every passage title and every passage text
of that request. The placeholder → value map lives only in the edge's memory (:class:`Redaction`), and
:meth:`Redaction.restore` puts the values back into the cloud's answer before the user sees it.

What is found:

- with no model: e-mail addresses, phone numbers (7 digits or more: "31 December 1687" holds no phone), card
  numbers (Luhn-checked), IBANs (checksum), IP addresses, URLs carrying credentials (``scheme://user:pass@host``,
  the one recognizer written here: Presidio has none), and the national IDs Presidio ships recognizers for
  (:data:`NATIONAL_IDS`, most of them checksum-validated);
- names, places and organisations only with an NER model: spaCy's ``en_core_web_sm`` 3.8.0 from its official
  archive, verified by SHA-256 (:data:`NER_ARCHIVE_SHA256`) before it is unpacked (:func:`unpack_ner_archive`).
  No copy that can be proven official is reachable here (the PyPI re-upload's archive differs), so by default
  names, places and organisations are **not** found: :attr:`Redactor.undetected` says so wherever the counts
  are shown.

Offline by construction: Presidio's ``AnalyzerEngine()`` would try to download a missing spaCy model, and its
e-mail and URL recognizers' ``tldextract`` would fetch the public-suffix list; here the NLP engine is a blank
spaCy pipeline (or the verified model) and ``tldextract`` reads the snapshot it ships.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import tarfile
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.errors import PiiBlockedError, PiiModelError
from reading.prompts import Passage

MODES = ("off", "redact", "block")

# Presidio entity → (kind, placeholder tag). Kinds are what counts and messages name.
_ENTITIES: dict[str, tuple[str, str]] = {
    "PERSON": ("name", "PERSON"),
    "LOCATION": ("place", "PLACE"),
    "GPE": ("place", "PLACE"),
    "ORGANIZATION": ("organization", "ORG"),
    "EMAIL_ADDRESS": ("email", "EMAIL"),
    "PHONE_NUMBER": ("phone", "PHONE"),
    "CREDIT_CARD": ("card", "CARD"),
    "IBAN_CODE": ("iban", "IBAN"),
    "IP_ADDRESS": ("ip", "IP"),
    "URL_CREDENTIALS": ("url", "URL"),
}
# The national IDs Presidio ships recognizers for (class name → entity), run for English text too.
NATIONAL_IDS: dict[str, str] = {
    "UsSsnRecognizer": "US_SSN", "UsItinRecognizer": "US_ITIN", "NhsRecognizer": "UK_NHS",
    "UkNinoRecognizer": "UK_NINO", "EsNifRecognizer": "ES_NIF", "EsNieRecognizer": "ES_NIE",
    "ItFiscalCodeRecognizer": "IT_FISCAL_CODE", "SgFinRecognizer": "SG_NRIC_FIN", "AuTfnRecognizer": "AU_TFN",
    "AuMedicareRecognizer": "AU_MEDICARE", "InAadhaarRecognizer": "IN_AADHAAR", "InPanRecognizer": "IN_PAN",
    "PlPeselRecognizer": "PL_PESEL", "FiPersonalIdentityCodeRecognizer": "FI_PERSONAL_IDENTITY_CODE",
    "SePersonnummerRecognizer": "SE_PERSONNUMMER", "KrRrnRecognizer": "KR_RRN", "TrNationalIdRecognizer": "TR_NATIONAL_ID",
    "ZaIdNumberRecognizer": "ZA_ID_NUMBER", "CaSinRecognizer": "CA_SIN", "ThTninRecognizer": "TH_TNIN",
}
for _entity in NATIONAL_IDS.values():
    _ENTITIES[_entity] = ("national_id", "ID")
_PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL_CREDENTIALS",
                     *NATIONAL_IDS.values())
_NER_ENTITIES = ("PERSON", "LOCATION", "GPE", "ORGANIZATION")
KINDS = ("name", "place", "organization", "email", "phone", "card", "iban", "ip", "url", "national_id")
_NOUNS = {"name": ("name", "names"), "place": ("place", "places"), "organization": ("organisation", "organisations"),
          "email": ("email", "emails"), "phone": ("phone number", "phone numbers"), "card": ("card", "cards"),
          "iban": ("IBAN", "IBANs"), "ip": ("IP address", "IP addresses"),
          "url": ("URL with credentials", "URLs with credentials"), "national_id": ("national ID", "national IDs")}
_TAGS = "|".join(sorted({tag for _, tag in _ENTITIES.values()}))
# A placeholder as sent, and as a model may echo it (brackets dropped, a space for the underscore).
PLACEHOLDER = re.compile(rf"<({_TAGS})[_ ](\d+)>|\b({_TAGS})_(\d+)\b")
_SENT = re.compile(rf"<({_TAGS})_(\d+)>")
_SURROGATES = re.compile("[\ud800-\udfff]")
MIN_SCORE = 0.3  # Presidio's phone recognizer scores 0.4; context words only raise scores
MIN_PHONE_DIGITS = 7
# Where a number without its country code is read as a phone (Presidio's default, and the locales the
# benchmark plants: Italian numbers without +39 were missed).
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "IT", "ES", "NL")
CARD_PATTERN = r"(?<![\d.,-])[02-6]\d{3}(?:[ -]?\d){8,15}(?![\d-])"

# spaCy's en_core_web_sm 3.8.0 as released by Explosion (github.com/explosion/spacy-models), the SHA-256 that
# conda-forge's spacy-models recipe, Arch's AUR and openSUSE pin for it.
NER_ARCHIVE = "en_core_web_sm-3.8.0.tar.gz"
NER_ARCHIVE_SHA256 = "14a2f31bc476af87019819ea8c9948fabdfd473a442edd6b1cba62bf0c2c0f55"
NER_ARCHIVE_URL = f"https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/{NER_ARCHIVE}"
MAX_NER_ARCHIVE_BYTES = 200 * 1024 * 1024


def noun(kind: str, n: int = 2) -> str:
    """What a kind is called in messages: "email" for one, "emails" for ``n`` other than 1."""
    one, many = _NOUNS.get(kind, (kind, kind + "s"))
    return one if n == 1 else many


def counts_line(counts: dict[str, int]) -> str:
    """``{"name": 2, "email": 1}`` → "2 names, 1 email" (in :data:`KINDS` order)."""
    return ", ".join(f"{counts[kind]} {noun(kind, counts[kind])}"
                     for kind in sorted(counts, key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS)))


def kind_of(entity: str) -> str:
    """The kind a Presidio entity counts as (``PERSON`` → "name")."""
    return _ENTITIES[entity][0]


def _key(tag: str, value: str) -> str:
    """What makes two values the same one: digits and letters only for numbers, case and spaces folded else."""
    value = unicodedata.normalize("NFKC", value)
    if tag in ("PHONE", "CARD", "IBAN", "ID"):
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    return " ".join(value.casefold().split())


@dataclass
class Redaction:
    """One request's redaction: what is sent, and the map back (edge memory only; never logged or sent).

    :param question: the question as sent.
    :param passages: the passages as sent.
    :param values: placeholder → the original value.
    :param kinds: placeholder → its kind.
    :param in_question: kind → distinct values found in the question.
    """

    question: str
    passages: tuple[Passage, ...]
    values: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    in_question: dict[str, int] = field(default_factory=dict)
    ms: float = 0.0  # the time it took

    @property
    def counts(self) -> dict[str, int]:
        """Kind → distinct values removed from the whole request (never the values)."""
        out: dict[str, int] = {}
        for kind in self.kinds.values():
            out[kind] = out.get(kind, 0) + 1
        return out

    def restore(self, text: str) -> str:
        """``text`` with every placeholder of this request put back (one it never sent stays as it is)."""
        if not self.values or not text:
            return text

        def back(m: re.Match[str]) -> str:
            tag, n = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            return self.values.get(f"<{tag}_{n}>", m.group(0))

        return PLACEHOLDER.sub(back, text)

    def restores(self, text: str) -> bool:
        """Whether :meth:`restore` changes ``text``."""
        return self.restore(text) != text

    def check_question(self) -> None:
        """:raises PiiBlockedError: the question carried personal data (the ``block`` mode's refusal)."""
        if self.in_question:
            raise PiiBlockedError(
                f"the question carries personal data ({counts_line(self.in_question)}) and pii is 'block', so it is "
                "not sent to the cloud — remove it, ask with --policy edge, or set ECQA_PII=redact", self.in_question)


def placeholders(text: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` character spans of the placeholders in ``text`` (for highlighting what was sent)."""
    return [m.span() for m in _SENT.finditer(text)]


class Redactor:
    """Finds personal data with Presidio and redacts requests (thread-safe; one per process is enough).

    :param ner_model: a spaCy model folder (from :func:`unpack_ner_archive`) whose NER finds names, places and
        organisations; None: the pattern recognizers only (no model is loaded, nothing is downloaded).
    """

    def __init__(self, ner_model: Path | None = None) -> None:
        self.ner_model = ner_model
        self._analyzer, self._anonymizer = _engines(ner_model)
        self._entities = list(_PATTERN_ENTITIES + (_NER_ENTITIES if ner_model is not None else ("PERSON",)))
        self._lock = threading.Lock()
        # Warm: the recognizers compile their patterns on first use (~0.4 s); not on the first question's clock.
        self.redact("Mail Jane Roe at jane.roe@example.org, +44 20 7946 0958, card 4111 1111 1111 1111.", [])

    @property
    def undetected(self) -> tuple[str, ...]:
        """The kinds this redactor cannot find (no verified NER model: places and organisations; names only as a
        known given name with a surname, or after an honorific)."""
        return () if self.ner_model is not None else ("place", "organization")

    def find(self, text: str) -> list[tuple[str, int, int, float]]:
        """``(presidio entity, start, end, score)`` of the personal data in ``text``, overlaps unresolved."""
        if not text.strip():
            return []
        # A lone surrogate (what JSON's "\ud800" or undecodable bytes become) is no character spaCy can store:
        # one replacement character each, so every offset stays the same.
        readable = _SURROGATES.sub("\ufffd", text)
        with self._lock:  # spaCy's pipeline and Presidio's registry are not documented thread-safe
            results = self._analyzer.analyze(readable, language="en", entities=self._entities,
                                             score_threshold=MIN_SCORE)
        out = []
        for r in results:
            if r.entity_type == "PHONE_NUMBER" and (sum(c.isdigit() for c in text[r.start:r.end]) < MIN_PHONE_DIGITS
                                                    or any(c in "\u2013\u2014" for c in text[r.start:r.end])):
                continue  # too short for a phone, or a range ("1851–1860 20"): phones are written with hyphens
            if r.entity_type in _ENTITIES:
                out.append((r.entity_type, r.start, r.end, float(r.score)))
        return out

    def check_question(self, question: str) -> None:
        """:raises PiiBlockedError: the question carries personal data (the ``block`` mode's refusal)."""
        self.redact(question, []).check_question()

    def redact(self, question: str, passages: Sequence[Passage]) -> Redaction:
        """The request with every value found replaced by its placeholder, and the map back."""
        t0 = time.perf_counter()
        values: dict[str, str] = {}
        kinds: dict[str, str] = {}
        by_key: dict[tuple[str, str], str] = {}
        spellings: dict[str, str] = {}  # every way a value was written -> its placeholder
        counters: dict[str, int] = {}

        def placeholder(entity: str, value: str) -> str:
            kind, tag = _ENTITIES[entity]
            k = (tag, _key(tag, value))
            if k not in by_key:
                counters[tag] = counters.get(tag, 0) + 1
                ph = f"<{tag}_{counters[tag]}>"
                by_key[k], values[ph], kinds[ph] = ph, value, kind
            spellings.setdefault(value, by_key[k])
            return by_key[k]

        q = self._redact_text(question, placeholder)
        titles = [self._redact_text(p.title, placeholder) for p in passages]
        texts = [self._redact_text(p.text, placeholder) for p in passages]
        # A value found in one place is replaced wherever else it is written, though the recognizers missed it
        # there (other context, glued to other text): longest first, so no value is cut by a shorter one.
        for value in sorted(spellings, key=len, reverse=True):
            q = q.replace(value, spellings[value])
            titles = [t.replace(value, spellings[value]) for t in titles]
            texts = [t.replace(value, spellings[value]) for t in texts]
        in_question = {}
        for ph in set(_SENT.findall(q)):
            kind = kinds[f"<{ph[0]}_{ph[1]}>"]
            in_question[kind] = in_question.get(kind, 0) + 1
        out = tuple(replace(p, title=t, text=x) for p, t, x in zip(passages, titles, texts, strict=True))
        return Redaction(q, out, values, kinds, in_question, (time.perf_counter() - t0) * 1000.0)

    def _redact_text(self, text: str, placeholder: Any) -> str:
        found = self.find(text)
        if not found:
            return text
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        results = [RecognizerResult(entity, start, end, score) for entity, start, end, score in _disjoint(found)]
        operators = {entity: OperatorConfig("custom", {"lambda": lambda v, e=entity: placeholder(e, v)})
                     for entity in {r.entity_type for r in results}}
        with self._lock:
            return str(self._anonymizer.anonymize(text=text, analyzer_results=results, operators=operators).text)


def _disjoint(found: list[tuple[str, int, int, float]]) -> list[tuple[str, int, int, float]]:
    """Overlapping finds resolved before replacing: the surer one, then the longer, keeps its span; one that
    overlaps it goes (the anonymizer's own resolution replaced a partial overlap twice, duplicating text)."""
    kept: list[tuple[str, int, int, float]] = []
    for f in sorted(found, key=lambda f: (-f[3], -(f[2] - f[1]), f[1])):
        if all(f[2] <= k[1] or f[1] >= k[2] for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f[1])


def passthrough(question: str, passages: Sequence[Passage]) -> Redaction:
    """The ``off`` mode's redaction: everything as it is."""
    return Redaction(question, tuple(passages))


def _engines(ner_model: Path | None) -> tuple[Any, Any]:
    import spacy
    import tldextract
    import tldextract.tldextract as tldextract_module
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer import predefined_recognizers as predefined
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_anonymizer import AnonymizerEngine

    # The snapshot tldextract ships, never the network (its default extractor fetches the suffix list).
    tldextract_module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    if ner_model is not None:
        try:
            nlp = spacy.load(ner_model)
        except Exception as exc:  # a damaged or foreign folder: one line, not spaCy's traceback
            raise PiiModelError(f"cannot load the NER model {ner_model}: {type(exc).__name__}: {str(exc)[:200]} — "
                                f"unpack the official {NER_ARCHIVE} again (ECQA_PII_NER_ARCHIVE)") from None
    else:
        nlp = spacy.blank("en")

    class _Engine(SpacyNlpEngine):
        """Presidio's spaCy engine on a pipeline already loaded (its own ``load`` would download a missing one)."""

        def load(self) -> None:
            self.nlp = {"en": nlp}

    ner_config = NerModelConfiguration(
        model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON", "GPE": "GPE", "LOC": "LOCATION",
                                          "FAC": "LOCATION", "ORG": "ORGANIZATION"},
        low_confidence_score_multiplier=1.0, low_score_entity_names=[])
    engine = _Engine(models=[{"lang_code": "en", "model_name": str(ner_model or "blank")}], ner_model_configuration=ner_config)
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(predefined.EmailRecognizer())
    registry.add_recognizer(predefined.PhoneRecognizer(supported_regions=PHONE_REGIONS))
    # Presidio's own recognizer and its Luhn check, on every 12-19 digit number of the major networks' ranges (0: Maestro's 0604…)
    # (its default pattern missed Mastercard 2-series, Maestro, and 13/14-digit cards in groups: `make bench-pii`).
    registry.add_recognizer(predefined.CreditCardRecognizer(patterns=[Pattern("card number (Luhn-checked)", CARD_PATTERN, 0.3)]))
    registry.add_recognizer(predefined.IbanRecognizer())
    registry.add_recognizer(predefined.IpRecognizer())
    for name, entity in NATIONAL_IDS.items():
        extra = {"patterns": _pan_patterns(Pattern, predefined.InPanRecognizer.PATTERNS)} if name == "InPanRecognizer" else {}
        registry.add_recognizer(getattr(predefined, name)(supported_language="en", supported_entity=entity, **extra))
    registry.add_recognizer(_name_recognizer(PatternRecognizer, Pattern))
    registry.add_recognizer(PatternRecognizer(
        supported_entity="URL_CREDENTIALS", name="UrlCredentialsRecognizer", supported_language="en",
        patterns=[Pattern("url with user:password", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s/:@<>\"']+:[^\s/@<>\"']+@"
                          r"[^\s/<>\"']*[^\s/<>\"'.,;:!?)\]](?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?/?", 1.0)]))
    if ner_model is not None:
        registry.add_recognizer(predefined.SpacyRecognizer(supported_language="en",
                                                           supported_entities=list(_NER_ENTITIES)))
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
    return analyzer, AnonymizerEngine()


# Presidio's low-score PAN pattern looks ahead for a letter and four digits over the whole rest of the text
# (``(?=.*?[a-zA-Z])(?=.*?[0-9]{4})`` under DOTALL) from every word boundary: quadratic, 23 s of a 100 kB passage's
# 30 s. The same test kept inside the 10-character token it matches is linear (and what the pattern means).
PAN_LOW = r"\b((?=[\w@#$%^?~-]{0,9}[a-zA-Z])(?=[\w@#$%^?~-]{0,6}[0-9]{4})[\w@#$%^?~-]{10})\b"


def _pan_patterns(pattern_cls: Any, shipped: list[Any]) -> list[Any]:
    """Presidio's PAN patterns with the low-score one confined to its token (:data:`PAN_LOW`)."""
    return [pattern_cls(p.name, PAN_LOW, p.score) if p.name == "PAN (Low)" else p for p in shipped]


# Given names in these Faker locales (its person providers, MIT): what the model-free name recognizer knows.
NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "pl_PL",
                "sv_SE")
_PARTICLES = r"(?:van|von|der|de|da|del|della|di|du|le|la|bin|al)"
_HONORIFICS = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)"


@functools.lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Given names of :data:`NAME_LOCALES`, capitalised single words."""
    import importlib

    names: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female"):
            value = getattr(provider, attr, None) or ()
            names.update(value.keys() if isinstance(value, dict) else value)
    return frozenset(n for n in names if len(n) > 1 and n.isalpha() and n[0].isupper() and n[1:].islower())


def _name_recognizer(pattern_recognizer: Any, pattern: Any) -> Any:
    """People's names without an NER model: a known given name followed by a capitalised surname ("Jane Roe",
    "Anna K. van Dijk"), or an honorific and a capitalised name ("Dr. Okafor"). It also takes "Charles River" for
    a person; `make bench-pii` measures both sides. Case-sensitive (Presidio's default flags ignore case)."""
    given = "|".join(sorted(given_names(), key=len, reverse=True))
    surname = r"[A-Z][a-z]*(?:['’][A-Z]?[a-z]+)?[a-z](?:-[A-Z][a-z]+)?"
    first_last = rf"\b(?:{given})(?:\s+[A-Z]\.)?\s+(?:{_PARTICLES}\s+)?{surname}\b"
    titled = rf"\b{_HONORIFICS}\.?\s+(?:[A-Z][a-z]+\s+)?{surname}\b"
    return pattern_recognizer(
        supported_entity="PERSON", name="GivenNameSurnameRecognizer", supported_language="en",
        patterns=[pattern("given name + surname", first_last, 0.6), pattern("honorific + name", titled, 0.6)],
        global_regex_flags=re.DOTALL | re.MULTILINE)


def unpack_ner_archive(archive: Path, into: Path, sha256: str = NER_ARCHIVE_SHA256) -> Path:
    """The model folder inside the official spaCy archive, verified by SHA-256 before a byte of it is unpacked.

    Unpacked once into ``into`` (data files only: no link, no path outside it); nothing in it is imported.

    :raises PiiModelError: missing, too big, not the official archive, or no model inside.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise PiiModelError(f"no NER archive at {archive} — download {NER_ARCHIVE} from {NER_ARCHIVE_URL} or unset "
                            "ECQA_PII_NER_ARCHIVE (names, places and organisations then go undetected)")
    if archive.stat().st_size > MAX_NER_ARCHIVE_BYTES:
        raise PiiModelError(f"{archive} is {archive.stat().st_size:,} bytes, not the {NER_ARCHIVE} release — download "
                            f"it from {NER_ARCHIVE_URL}")
    digest = hashlib.sha256()
    with archive.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise PiiModelError(f"{archive} is not the official {NER_ARCHIVE} (SHA-256 {digest.hexdigest()[:16]}…, expected "
                            f"{sha256[:16]}…) — download it from {NER_ARCHIVE_URL}; re-uploads are refused")
    target = Path(into).expanduser() / sha256[:16]
    if not target.is_dir():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # refuses links out, absolute paths, devices
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PiiModelError(f"cannot unpack {archive}: {exc} — download it again from {NER_ARCHIVE_URL}") from None
        tmp.rename(target)
    found = sorted(p.parent for p in target.rglob("config.cfg") if (p.parent / "meta.json").is_file()
                   and (p.parent / "ner").is_dir())
    if not found:
        raise PiiModelError(f"{archive} holds no spaCy model with an NER component — download {NER_ARCHIVE} from "
                            f"{NER_ARCHIVE_URL}")
    return found[0]
