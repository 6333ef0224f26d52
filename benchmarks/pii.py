"""`make bench-pii`: what the edge's PII redaction (:mod:`edge.pii`) finds, what it costs in F1, and its latency.

Three measurements, side by side in one run:

1. **Detection** on a seeded synthetic corpus (Faker, :data:`LOCALES`): questions and passage sentences with
   personal data planted at known character offsets (names, e-mails, phone numbers, cards, IBANs, IP addresses,
   URLs with credentials, national IDs), and sentences with none but with look-alikes (years, prices, dates,
   versions, ISBNs, barcodes, capitalised non-person phrases). Matching rule: a found span is a hit when it
   overlaps a planted span of the same kind; recall = planted spans hit / planted, precision = found spans that
   overlap a planted span of their kind / found. The name recognizer's given names come from Faker's
   :data:`edge.pii.NAME_LOCALES`, so names drawn from those locales are circular: names from
   :data:`OTHER_NAME_LOCALES` (none of them in that list) are reported on their own row. On the real SQuAD dev-a
   contexts (no gold labels) the block shows detections per 100 passages: what redaction touches.
2. **F1 cost** on the first N held-out dev-a records of `make bench-models` (file order, no selection): cloud-only
   and the cascade replayed with ``pii`` off and redact. Greedy decoding is deterministic, so a question whose
   redacted payload (question + passages as cut and sent) equals the original gets the same cloud reading; only
   the questions whose payload changes are read again, once with ``off`` and once with ``redact`` in the same
   run (the off re-read, not the older record, is their ``off`` reading: the records were made by older code).
   Resumable: one line per question in ``<out>/reread.jsonl``, keyed by a digest of the redacted payload (a line
   made for another payload, by an older redactor, is read again).
3. **Latency**: redaction of each held-out question's real payload (question + top-3 passages), p50/p95, against
   the cascade's per-question latency from the same records, and the one-time load of the Redactor.

One command reproduces the block::

    make bench-pii   # = .venv/bin/python -m benchmarks.pii --records bench/models/eval/records.jsonl -n 300
"""

from __future__ import annotations

# Imports inside functions: Faker, Presidio and the cloud stack load in seconds; `--from-json` (make bench-tables)
# and the tests of the corpus and the scorer need none of what they do not run.
import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.markdown import publish
from edge.pii import counts_line
from eval.records import labelled, read_records
from eval.replay import route_records, summarize
from eval.squad_metrics import Question, score_question
from eval.stats import bootstrap_ci, paired_bootstrap_ci, percentile

START, END = "<!-- bench-pii:start -->", "<!-- bench-pii:end -->"
HEADING = "## Personal data kept on the device — `make bench-pii`"
COMMAND = "make bench-pii"

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL")
# Faker locales whose given names the recognizer was NOT built from (checked against edge.pii.NAME_LOCALES).
OTHER_NAME_LOCALES = ("fi_FI", "da_DK", "cs_CZ", "hu_HU", "ro_RO", "tr_TR", "pt_PT", "no_NO", "hr_HR", "sk_SK")
STRUCTURED = ("email", "phone", "card", "iban", "ip", "url", "national_id")
NAMES_IN, NAMES_OUT = "names, NAME_LOCALES (circular)", "names, other locales"
GROUPS = ("structured", NAMES_IN, NAMES_OUT, "look-alikes")
SEED = 2024
PER_LOCALE = 30  # planted values per structured kind and locale (7 locales: 210 per kind)
NAMES_PER_LOCALE = 60
LOOKALIKES_PER_LOCALE = 60
BUDGET_MS = 12000.0  # bench-models' Tmax: its records are replayed as it replays them


# --- the synthetic corpus ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Planted:
    """One value planted in a sample: ``text[start:end] == value``."""

    kind: str
    start: int
    end: int
    value: str
    source: str  # the Faker locale, a national ID's name, or a card's network
    valid: bool = True  # False: a phone number libphonenumber itself rejects in its locale's region (Faker's often are)
    middle: bool = False  # a name with a middle name ("Henry David Thoreau")


@dataclass(frozen=True)
class Sample:
    text: str
    planted: tuple[Planted, ...]
    group: str
    locale: str
    form: str = ""  # a look-alike's form (isbn10, serial, ...)


def plant(template: str, values: Sequence[tuple[str, str, str]], group: str, locale: str,
          valid: Sequence[bool] = (), middle: Sequence[bool] = ()) -> Sample:
    """``template`` with each ``{}`` replaced by the next ``(kind, value, source)``, offsets kept."""
    pieces = template.split("{}")
    if len(pieces) != len(values) + 1:
        raise ValueError(f"{template!r} has {len(pieces) - 1} slots for {len(values)} values")
    text, planted = pieces[0], []
    for i, ((kind, value, source), after) in enumerate(zip(values, pieces[1:], strict=True)):
        ok = valid[i] if i < len(valid) else True
        mid = middle[i] if i < len(middle) else False
        planted.append(Planted(kind, len(text), len(text) + len(value), value, source, ok, mid))
        text += value + after
    return Sample(text, tuple(planted), group, locale)


TEMPLATES: dict[str, tuple[str, ...]] = {
    "email": ("You can reach the organiser at {} for tickets.", "Send the signed form to {} before Friday.",
              "Whose address is {}?", "Is {} still the contact for the archive?"),
    "phone": ("Call {} to book a tour of the museum.", "The front desk number is {} and it is staffed daily.",
              "Who answers the line {}?", "Bookings: {} (weekdays only)."),
    "card": ("The booking was paid with card {} on arrival.", "Why was the card {} declined?",
             "The refund went back to {} last week."),
    "iban": ("Transfer the fee to IBAN {} by the end of the month.", "Which bank holds the account {}?",
             "Payments go to {} at the cooperative bank."),
    "ip": ("The server at {} stopped answering at noon.", "Requests from {} were blocked by the firewall.",
           "Who owns the address {}?"),
    "url": ("The backup job pulls from {} every night.", "Why does {} fail to connect?",
            "The old dashboard ({}) still works."),
    "national_id": ("The applicant's number {} was checked by the clerk.", "Whose ID is {}?",
                    "Her identity number is listed as {} in the file.", "The form gives {} as the reference."),
    "name": ("The letter was signed by {} in 1998.", "{} gave the opening lecture at the conference.",
             "Who hired {} as an engineer?", "According to the minutes, {} and {} voted against the plan.",
             "What did {} say about the harbour?"),
}
# Capitalised phrases that name no person, written once by hand (places, events, institutions; about half hold a
# word that is also a given name somewhere).
NON_PERSONS = (
    "Roman Empire", "Charles River", "Victoria Falls", "Lake Victoria", "Nobel Prize", "Royal Navy", "Black Death",
    "Grand Canyon", "Pacific Ocean", "Supreme Court", "Magna Carta", "Iron Age", "Industrial Revolution", "Cold War",
    "Silk Road", "Rocky Mountains", "Amazon River", "Great Wall", "Golden Gate Bridge", "Jordan River", "Santa Monica",
    "San Francisco", "Big Ben", "Mount Everest", "Prime Minister", "Buckingham Palace", "Virginia Beach",
    "Georgia Tech", "Florence Cathedral", "Paris Commune", "Sydney Opera House", "Hudson Bay", "Victoria Station",
    "Adelaide Oval", "Lincoln Memorial", "Elizabeth Line", "Austin Convention Center", "Berlin Wall", "Milan Cathedral",
    "Alexander Technique",
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
URL_SCHEMES = ("https", "http", "ftp", "postgresql", "mongodb", "redis", "amqp")


def _national_ids() -> tuple[tuple[str, str, Callable[[Any], str]], ...]:
    """(name shown, Faker locale, generator) of the national IDs Faker generates valid and Presidio has a
    recognizer for (edge.pii.NATIONAL_IDS), plus the UK NHS number, generated here with its mod-11 check digit.
    Not here: Faker's Aadhaar (a Luhn check digit, where the real one is Verhoeff: Presidio rightly refuses them)
    and its UK NINO (always the invalid prefix ZZ)."""

    def nhs(fake: Any) -> str:
        while True:
            digits = [fake.random_int(0, 9) for _ in range(9)]
            check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
            if check == 10:
                continue
            s = "".join(map(str, digits)) + str(0 if check == 11 else check)
            return f"{s[:3]} {s[3:6]} {s[6:]}"

    return (("US SSN", "en_US", lambda f: f.ssn()), ("US ITIN", "en_US", lambda f: f.itin()),
            ("UK NHS number", "en_GB", nhs), ("IT codice fiscale", "it_IT", lambda f: f.ssn()),
            ("ES NIF", "es_ES", lambda f: f.nif()), ("ES NIE", "es_ES", lambda f: f.nie()),
            ("FI henkilötunnus", "fi_FI", lambda f: f.ssn()), ("SE personnummer", "sv_SE", lambda f: f.ssn()),
            ("PL PESEL", "pl_PL", lambda f: f.pesel()), ("IN PAN", "en_IN", lambda f: f.pan()),
            ("KR RRN", "ko_KR", lambda f: f.ssn()), ("TR kimlik no", "tr_TR", lambda f: f.ssn()),
            ("CA SIN", "en_CA", lambda f: f.ssn()))


REGIONS = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "it_IT": "IT", "es_ES": "ES", "nl_NL": "NL"}


def valid_phone(value: str, locale: str) -> bool:
    """Whether libphonenumber takes ``value`` for a valid number of ``locale``'s region (or its own +prefix)."""
    import phonenumbers

    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(value, REGIONS[locale])))
    except phonenumbers.NumberParseException:
        return False


def _grouped(s: str, size: int = 4) -> str:
    return " ".join(s[i:i + size] for i in range(0, len(s), size))


CARD_TYPES = ("visa16", "mastercard", "amex", "discover", "jcb16", "diners", "maestro", "visa13")  # Faker's names


def _value(fake: Any, kind: str, i: int) -> str:
    """The i-th value of ``kind`` from ``fake`` (formats cycle with i)."""
    if kind == "email":
        return (fake.email, fake.free_email, fake.company_email)[i % 3]()
    if kind == "phone":
        return str(fake.phone_number())
    if kind == "card":
        number = str(fake.credit_card_number(CARD_TYPES[i % len(CARD_TYPES)]))
        return (number, _grouped(number), "-".join(_grouped(number).split()))[(i // len(CARD_TYPES)) % 3]
    if kind == "iban":
        iban = str(fake.iban())
        return iban if i % 2 else _grouped(iban)
    if kind == "ip":
        return str(fake.ipv4_public()) if i % 3 else str(fake.ipv6())
    if kind == "url":
        scheme = URL_SCHEMES[i % len(URL_SCHEMES)]
        host = str(fake.domain_name()) if i % 4 else str(fake.ipv4_public())
        port = f":{fake.port_number()}" if scheme not in ("https", "http") else ""
        user = quote(str(fake.user_name()), safe="")
        password = quote(str(fake.password(length=12)), safe="")
        path = str(fake.uri_path()) if i % 2 else ""
        return f"{scheme}://{user}:{password}@{host}{port}/{path}"
    raise ValueError(kind)


def _lookalike(fake: Any, i: int) -> tuple[str, str]:
    """(form, a sentence with no personal data and numbers or capitalised phrases that look like some)."""
    r = fake.random_int
    year = r(1000, 2024)

    def phrase() -> str:
        return NON_PERSONS[r(0, len(NON_PERSONS) - 1)]

    forms: dict[str, Callable[[], str]] = {
        "population": lambda: f"In {year} the population reached {r(10_000, 50_000_000):,}.",
        "date": lambda: f"The treaty was signed on {r(1, 28)} {MONTHS[r(0, 11)]} {year}.",
        "price": lambda: f"Tickets cost ${r(5, 900)}.{r(0, 99):02d} or €{r(1, 50_000):,} for the season.",
        "version + ISO date": lambda: f"Version {r(0, 12)}.{r(0, 30)}.{r(0, 99)} was released on {fake.date()}.",
        "ISBN-13": lambda: f"The book (ISBN {fake.isbn13()}) has {r(80, 1200)} pages.",
        "ISBN-10": lambda: f"Its first edition, ISBN {fake.isbn10()}, sold out in {year}.",
        "years + casualties": lambda: f"The war lasted from {year} to {year + r(1, 30)}, with {r(1000, 9_999_999):,} "
                                      "casualties.",
        "coordinates": lambda: f"Its coordinates are {fake.latitude()}, {fake.longitude()}.",
        "EAN-13": lambda: f"The item code {fake.ean13()} is printed on the label.",
        "distance": lambda: f"The distance is {r(1, 9999)}.{r(0, 9)} km, about {r(1, 6000)} miles.",
        "pages + figure": lambda: f"See pages {r(1, 400)}–{r(401, 900)} and figure {r(1, 12)}.{r(1, 9)}.",
        "temperature + time": lambda: f"The temperature fell to −{r(1, 60)} °C at {r(0, 23):02d}:{r(0, 59):02d} on "
                                      f"{fake.date()}.",
        "DOI": lambda: f"The paper's DOI is {fake.doi()}.",
        "flight": lambda: f"Flight {fake.lexify('??').upper()}{r(100, 9999)} left gate {fake.lexify('?').upper()}"
                          f"{r(1, 60)}.",
        "postcode + city": lambda: f"The postcode {fake.postcode()} covers the old town of {fake.city()}.",
        "non-person phrase + years": lambda: f"Between {year} and {year + r(1, 9)} the {phrase()} drew {r(1, 99)} "
                                             "million visitors.",
        "non-person phrase": lambda: f"The {phrase()} is mentioned in chapter {r(1, 40)}.",
        "budget + votes": lambda: f"Its budget of {r(1, 900)} million was approved by {r(100, 650)} votes to "
                                  f"{r(1, 99)}.",
        "serial number (9-10 digits)": lambda: f"Serial number {r(10**8, 10**10 - 1)} was assigned in {fake.country()}.",
        "power + ordinal": lambda: f"The reactor produced {r(100, 99_999):,} MW from {year}, the {r(2, 99)}th of its "
                                   "kind.",
    }
    name = list(forms)[i % len(forms)]
    return name, forms[name]()


def corpus(seed: int = SEED, per_locale: int = PER_LOCALE, names_per_locale: int = NAMES_PER_LOCALE,
           lookalikes_per_locale: int = LOOKALIKES_PER_LOCALE) -> list[Sample]:
    """The seeded synthetic corpus: the same samples for the same arguments."""
    from faker import Faker

    from edge.pii import NAME_LOCALES

    if set(OTHER_NAME_LOCALES) & set(NAME_LOCALES):
        raise ValueError(f"OTHER_NAME_LOCALES overlaps NAME_LOCALES: {set(OTHER_NAME_LOCALES) & set(NAME_LOCALES)}")
    samples: list[Sample] = []

    def faker(locale: str, salt: int) -> Any:
        f = Faker(locale)
        f.seed_instance(seed * 1000 + salt)
        return f

    for li, locale in enumerate(LOCALES):
        fake = faker(locale, li)
        for kind in ("email", "phone", "card", "iban", "ip", "url"):
            for i in range(per_locale):
                template = TEMPLATES[kind][i % len(TEMPLATES[kind])]
                value = _value(fake, kind, i)
                source = CARD_TYPES[i % len(CARD_TYPES)] if kind == "card" else locale  # a card's network, not its locale
                samples.append(plant(template, [(kind, value, source)], "structured", locale,
                                     [valid_phone(value, locale)] if kind == "phone" else ()))
        for i in range(lookalikes_per_locale):
            form, text = _lookalike(fake, i)
            samples.append(Sample(text, (), "look-alikes", locale, form))
    for ni, (name, locale, make) in enumerate(_national_ids()):
        fake = faker(locale, 100 + ni)
        for i in range(per_locale):
            template = TEMPLATES["national_id"][i % len(TEMPLATES["national_id"])]
            samples.append(plant(template, [("national_id", str(make(fake)), name)], "structured", locale))
    for group, locales in ((NAMES_IN, LOCALES), (NAMES_OUT, OTHER_NAME_LOCALES)):
        for li, locale in enumerate(locales):
            fake = faker(locale, 200 + li + (50 if group == NAMES_OUT else 0))
            for i in range(names_per_locale):
                template = TEMPLATES["name"][i % len(TEMPLATES["name"])]
                # Every fourth sentence's names carry a middle name ("Henry David Thoreau"): the whole of it must go.
                middle = i % 4 == 3
                names = [("name", f"{fake.first_name()} {fake.first_name() + ' ' if middle else ''}{fake.last_name()}",
                          locale) for _ in range(template.count("{}"))]
                samples.append(plant(template, names, group, locale, (), [middle] * len(names)))
    return samples


# --- scoring --------------------------------------------------------------------------------------------------------
Found = tuple[str, int, int]  # kind, start, end


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def source_key(p: Planted) -> str:
    """The row of ``p`` in the by-source table."""
    return f"{p.kind}: {p.source}" + ("" if p.valid else " (not a valid number)")


def score(samples: Sequence[Sample], found: Sequence[Sequence[Found]]) -> dict[str, Any]:
    """Recall and precision per kind (and per group and source): the matching rule of the module docstring.

    :param found: per sample, the (kind, start, end) spans the recognizers returned.
    :returns: ``{"kinds": {kind: counts}, "groups": {...}, "sources": {...}, "false_alarms": ..., "mislabelled": ...}``.
        Counts of planted values: planted, hit (a same-kind span overlaps), hit_any (a span of any kind overlaps: it
        is redacted, if under another label), covered (same-kind spans cover every character); of found spans: found,
        found_true (overlaps a planted value of its kind), found_other (only a value of another kind: mislabelled),
        found_clean (no planted value: a false alarm); and recall / recall_any / coverage / precision in [0, 1].
        Groups: each structured kind, the two name rows, "look-alikes", and "<kind>, valid" for the values
        libphonenumber accepts where some are not (phone numbers).
    """
    def blank() -> dict[str, Any]:
        return {"planted": 0, "hit": 0, "hit_any": 0, "covered": 0, "found": 0, "found_true": 0, "found_other": 0,
                "found_clean": 0}

    kinds: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, Any]] = {}
    false_alarms: dict[str, Counter[str]] = {}
    mislabelled: dict[str, Counter[str]] = {}
    pairs: Counter[str] = Counter()
    forms: Counter[str] = Counter()
    for sample, spans in zip(samples, found, strict=True):
        spans = sorted(set(spans))
        name_row = sample.group if sample.group in (NAMES_IN, NAMES_OUT) else None
        for p in sample.planted:
            same = [sp for sp in spans if sp[0] == p.kind and _overlaps(sp[1], sp[2], p.start, p.end)]
            chars: set[int] = set()
            for _, a, b in same:
                chars.update(range(a, b))
            row = name_row if p.kind == "name" and name_row else p.kind
            buckets = [kinds.setdefault(p.kind, blank()), groups.setdefault(row, blank()),
                       sources.setdefault(source_key(p), blank())]
            if p.kind == "phone" and p.valid:
                buckets.append(groups.setdefault("phone, valid", blank()))
            if p.middle:
                buckets.append(groups.setdefault(f"{row}, middle name", blank()))
            for bucket in buckets:
                bucket["planted"] += 1
                bucket["hit"] += bool(same)
                bucket["hit_any"] += any(_overlaps(sp[1], sp[2], p.start, p.end) for sp in spans)
                bucket["covered"] += set(range(p.start, p.end)) <= chars
        for kind, a, b in spans:
            over = [p for p in sample.planted if _overlaps(a, b, p.start, p.end)]
            true = any(p.kind == kind for p in over)
            what = "found_true" if true else "found_other" if over else "found_clean"
            row = "look-alikes" if sample.group == "look-alikes" else name_row if kind == "name" and name_row else kind
            for bucket in (kinds.setdefault(kind, blank()), groups.setdefault(row, blank())):
                bucket["found"] += 1
                bucket[what] += 1
            if what == "found_clean":
                false_alarms.setdefault(kind, Counter())[sample.text[a:b]] += 1
                if sample.form:
                    forms[f"{kind} on {sample.form}"] += 1
            elif what == "found_other":
                mislabelled.setdefault(kind, Counter())[f"{over[0].kind}: {sample.text[a:b]}"] += 1
                pairs[f"{kind} on {over[0].kind}"] += 1
    for table in (kinds, groups, sources):
        for c in table.values():
            c["recall"] = c["hit"] / c["planted"] if c["planted"] else None
            c["recall_any"] = c["hit_any"] / c["planted"] if c["planted"] else None
            c["coverage"] = c["covered"] / c["planted"] if c["planted"] else None
            c["precision"] = c["found_true"] / c["found"] if c["found"] else None
    return {"kinds": kinds, "groups": groups, "sources": sources,
            "false_alarms": {k: v.most_common(15) for k, v in false_alarms.items()},
            "false_alarm_counts": {k: sum(v.values()) for k, v in false_alarms.items()},
            "mislabelled": {k: v.most_common(8) for k, v in mislabelled.items()},
            "mislabel_pairs": pairs.most_common(), "false_alarm_forms": forms.most_common()}


def non_person_phrases(redactor: Any) -> list[str]:
    """The hand-written :data:`NON_PERSONS` phrases taken for a person, each alone in a neutral sentence."""
    out = []
    for phrase in NON_PERSONS:
        text = f"We read about the {phrase} last year."
        start = text.index(phrase)
        if any(k == "name" and _overlaps(a, b, start, start + len(phrase)) for k, a, b in found_kinds(redactor, text)):
            out.append(phrase)
    return out


def found_kinds(redactor: Any, text: str) -> list[Found]:
    """What ``redactor`` finds in ``text``, as (kind, start, end)."""
    from edge.pii import kind_of

    return sorted({(kind_of(entity), start, end) for entity, start, end, _ in redactor.find(text)})


def detection(redactor: Any, seed: int, per_locale: int) -> dict[str, Any]:
    """Part 1 on the synthetic corpus."""
    samples = corpus(seed, per_locale)
    t0 = time.perf_counter()
    found = [found_kinds(redactor, s.text) for s in samples]
    elapsed = time.perf_counter() - t0
    result = score(samples, found)
    missed: dict[str, list[str]] = {}
    for s, spans in zip(samples, found, strict=True):
        for p in s.planted:
            if not any(k == p.kind and _overlaps(a, b, p.start, p.end) for k, a, b in spans):
                missed.setdefault(source_key(p), []).append(p.value)
    result["missed_examples"] = {k: v[:6] for k, v in sorted(missed.items())}
    result["non_persons_taken"] = non_person_phrases(redactor)
    result["lookalike_forms"] = list(dict.fromkeys(s.form for s in samples if s.form))
    result["non_persons_n"] = len(NON_PERSONS)
    result.update(seed=seed, per_locale=per_locale, samples=len(samples),
                  samples_by_group=dict(Counter(s.group for s in samples)), ms_per_sample=1000 * elapsed / len(samples))
    return result


def squad_detections(redactor: Any, data: Path) -> dict[str, Any]:
    """Detections per kind on the distinct dev-a contexts and on its questions (no gold labels)."""
    from eval.data import load_questions

    questions = load_questions(data)
    contexts = list(dict.fromkeys(q.context for q in questions))
    out: dict[str, Any] = {"data": str(data)}
    for what, texts in (("contexts", contexts), ("questions", [q.question for q in questions])):
        per_kind: Counter[str] = Counter()
        touched: Counter[str] = Counter()
        values: dict[str, Counter[str]] = {}
        for text in texts:
            spans = found_kinds(redactor, text)
            for kind, a, b in spans:
                per_kind[kind] += 1
                values.setdefault(kind, Counter())[text[a:b]] += 1
            for kind in {k for k, _, _ in spans}:
                touched[kind] += 1
        out[what] = {"n": len(texts), "spans": dict(per_kind), "texts_touched": dict(touched),
                     "any_touched": sum(1 for t in texts if found_kinds(redactor, t)),
                     "top_values": {k: v.most_common(20) for k, v in values.items()}}
    return out


# --- latency --------------------------------------------------------------------------------------------------------
def load_time(repeats: int = 3) -> dict[str, float]:
    """The Redactor's first construction in a fresh process (imports included), median of ``repeats``."""
    code = ("import time; t0 = time.perf_counter(); from edge.pii import Redactor; t1 = time.perf_counter(); "
            "r = Redactor(); t2 = time.perf_counter(); r.find('warm up: Jane Doe, jane@example.com'); "
            "t3 = time.perf_counter(); print(t1 - t0, t2 - t1, t3 - t2)")
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        runs.append([float(x) for x in out])
    cols = list(zip(*runs, strict=True))
    return {"import_s": statistics.median(cols[0]), "construct_s": statistics.median(cols[1]),
            "first_find_s": statistics.median(cols[2]), "total_s": statistics.median([sum(r) for r in runs]),
            "repeats": repeats}


def _passages(r: dict[str, Any]) -> list[Any]:
    from reading.prompts import Passage

    return [Passage(title, text) for title, text in zip(r["titles"], r["passages"], strict=True)]


def redaction_latency(redactor: Any, records: Sequence[dict[str, Any]], cal: Any) -> dict[str, Any]:
    """Redaction of each record's question + passages (warm), against the cascade's replayed per-question latency."""
    redactor.redact(records[0]["question"], _passages(records[0]))  # first call pays lazy set-up
    ms = []
    for r in records:
        passages = _passages(r)
        t0 = time.perf_counter()
        redactor.redact(r["question"], passages)
        ms.append((time.perf_counter() - t0) * 1000.0)
    cascade = [x.latency_ms for x in route_records(records, cal.policy("cascade"), cal, BUDGET_MS)]
    chars = [len(r["question"]) + sum(len(t) + len(p) for t, p in zip(r["titles"], r["passages"], strict=True))
             for r in records]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "mean_ms": statistics.fmean(ms),
            "max_ms": max(ms), "chars_mean": statistics.fmean(chars),
            "cascade_p50_ms": percentile(cascade, 50), "cascade_mean_ms": statistics.fmean(cascade)}


# --- the F1 cost: records, and re-reads of the questions whose payload changes ---------------------------------------
def held_out(records_path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` held-out records in file order (each with a cloud reading)."""
    by_id = read_records(records_path)
    if not by_id:
        raise SystemExit(f"no records in {records_path} — run `make bench-models` first")
    records = labelled(by_id.values())
    if len(records) < len(by_id):
        raise SystemExit(f"{len(by_id) - len(records)} records in {records_path} have no cloud reading — rerun the "
                         "`ecqa eval` step of `make bench-models` (it resumes)")
    return records[:n]


def sent(answerer: Any, question: str, passages: Sequence[Any]) -> dict[str, Any]:
    """What the model reads of a request (question and passages as cut and sent; the counts are metrics only)."""
    payload = answerer.payload(question, passages)
    return {"question": payload["question"], "passages": payload["passages"]}


def changed_ids(records: Sequence[dict[str, Any]], redactor: Any, answerer: Any) -> dict[str, dict[str, Any]]:
    """Question id -> {"counts": the redaction's counts, "key": a digest of the redacted payload}, for the records
    whose payload changes under redaction (a re-read made for another payload, by an older redactor, is stale)."""
    out = {}
    for r in records:
        passages = _passages(r)
        red = redactor.redact(r["question"], passages)
        redacted = sent(answerer, red.question, red.passages)
        if redacted != sent(answerer, r["question"], passages):
            key = hashlib.sha256(json.dumps(redacted, sort_keys=True).encode()).hexdigest()[:16]
            out[r["id"]] = {"counts": red.counts, "key": key}
    return out


def current(line: dict[str, Any] | None, change: dict[str, Any]) -> bool:
    """Whether a re-read line is complete and made for the payload the redactor sends now."""
    return line is not None and "off" in line and "redact" in line and line.get("key") == change["key"]


def _reply_json(reply: Any, r: dict[str, Any]) -> dict[str, Any]:
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return {"answer": reply.answer, "confidence": reply.confidence, "p_answerable": reply.p_answerable,
            "reading": reply.reading.to_json(), "timings": reply.timings, "usage": reply.usage,
            "redactions": dict(reply.redactions), "restored": bool(reply.restored),
            "f1": score_question(q, reply.answer)["f1"]}


def reread(records: Sequence[dict[str, Any]], changed: dict[str, dict[str, Any]], redactor: Any, out: Path,
           timeout_s: float = 300.0) -> None:
    """Read every record whose payload changes under redaction (``changed``) in the cloud twice, ``off`` then
    ``redact``, through the embedded stack; one line per question appended to ``out`` (a rerun skips the questions
    it has)."""
    import tempfile

    from cloud.cloud_answerer import CloudAnswerer
    from pipelines.cloud_client import AnswererClient
    from pipelines.cloud_path import cloud_answerer_from
    from pipelines.settings import load_settings
    from pipelines.stack import embedded_stack

    lines = read_records(out)
    todo = [r for r in records if r["id"] in changed and not current(lines.get(r["id"]), changed[r["id"]])]
    print(f"{len(changed)} of {len(records)} payloads change under redaction; {len(todo)} to read (twice each)",
          flush=True)
    if not todo:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, embedded_stack(Path(tmp)) as stack:
        # A shared 2-core machine under load reads one request in up to ~30 s: the default 30 s read timeout is short.
        s = load_settings(cloud_url=stack.cloud_url, cloud_dir=stack.cloud_dir, pii="off",
                          cloud_read_timeout_s=timeout_s)
        answerer: CloudAnswerer = cloud_answerer_from(s)
        clients = {"off": AnswererClient(answerer, "off"), "redact": AnswererClient(answerer, "redact", redactor)}
        with out.open("a") as fh:
            t_start = time.perf_counter()
            for i, r in enumerate(todo):
                line: dict[str, Any] = {"id": r["id"], "counts": changed[r["id"]]["counts"],
                                        "key": changed[r["id"]]["key"]}
                red = redactor.redact(r["question"], _passages(r))
                line["values"] = red.values  # Wikipedia text: what was taken for personal data (bench/ only)
                line["in_question"] = red.in_question
                for mode, client in clients.items():
                    t0 = time.perf_counter()
                    try:
                        reply = client.ask(r["question"], _passages(r), timeout_s=timeout_s)
                    except Exception as exc:  # recorded, not raised: a rerun reads it again
                        line["error"] = f"{mode}: {type(exc).__name__}: {str(exc)[:200]}"
                        break
                    line[mode] = {**_reply_json(reply, r), "total_ms": (time.perf_counter() - t0) * 1000.0}
                fh.write(json.dumps(line) + "\n")
                fh.flush()
                rate = (time.perf_counter() - t_start) / (i + 1)
                print(f"{i + 1}/{len(todo)} {r['id']} off {line.get('off', {}).get('f1', '?')} redact "
                      f"{line.get('redact', {}).get('f1', '?')} · {rate:.1f} s/question, "
                      f"~{rate * (len(todo) - i - 1) / 60:.0f} min left", flush=True)
        answerer.close()


def _with_cloud(r: dict[str, Any], read: dict[str, Any]) -> dict[str, Any]:
    """``r`` with another cloud reading; its timings, bytes and usage stay the record's (the routes' latency model
    sees the same calls: only what the cloud answered differs)."""
    cloud = {**r["cloud"], **{k: read[k] for k in ("answer", "confidence", "p_answerable", "reading", "f1")}}
    return {**r, "cloud": cloud}


def _gold_redacted(read: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether a redacted value and a gold answer of the record overlap (one holds the other, case folded)."""
    golds = [g.casefold() for g in record["answers"] if g]
    return any(v.casefold() in g or g in v.casefold() for v in read.get("values", {}).values() for g in golds)


def complete_prefix(records: Sequence[dict[str, Any]], changed: dict[str, Any],
                    rereads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The records in file order up to the first changed one not yet read again (an unfinished run reports the
    questions it finished, never a selection)."""
    out = []
    for r in records:
        if r["id"] in changed and not current(rereads.get(r["id"]), changed[r["id"]]):
            break
        out.append(r)
    return out


def f1_cost(records: Sequence[dict[str, Any]], changed: dict[str, Any], rereads: dict[str, dict[str, Any]],
            cal: Any) -> dict[str, Any]:
    """Cloud-only and cascade F1 with pii off and redact, always-no-answer, bootstrap intervals, paired differences.

    :param changed: ids of the records whose payload changes under redaction; each must have its re-reads.
    """
    if any(r["id"] in changed and not current(rereads.get(r["id"]), changed[r["id"]]) for r in records):
        raise ValueError("a changed record has no current re-read — pass complete_prefix(...)")
    variants = {
        "off": [_with_cloud(r, rereads[r["id"]]["off"]) if r["id"] in changed else r for r in records],
        "redact": [_with_cloud(r, rereads[r["id"]]["redact"]) if r["id"] in changed else r for r in records],
        "records": list(records),
    }
    empty = [100.0 * (not r["has_answer"]) for r in records]
    rows: dict[str, Any] = {"always no-answer": {"f1": statistics.fmean(empty), "f1_ci95": bootstrap_ci(empty),
                                                 "has_ans_f1": 0.0, "no_ans_accuracy": 100.0}}
    per_q: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {}
    idx = [i for i, r in enumerate(records) if r["id"] in changed]
    for policy in ("cloud", "cascade"):
        for mode in ("off", "redact", "records"):
            routed = route_records(variants[mode], cal.policy(policy), cal, BUDGET_MS)
            f1 = [100.0 * x.f1 for x in routed]
            per_q[f"{policy}/{mode}"] = f1
            answers[f"{policy}/{mode}"] = [x.answer for x in routed]
            s = summarize(routed, variants[mode])
            rows[f"{policy}/{mode}"] = {"f1": s["f1"], "f1_ci95": bootstrap_ci(f1), "has_ans_f1": s["has_ans_f1"],
                                        "no_ans_accuracy": s["no_ans_accuracy"], "cloud_call_rate": s["cloud_call_rate"],
                                        "changed_f1": statistics.fmean([f1[i] for i in idx]) if idx else None}
        a, b = per_q[f"{policy}/redact"], per_q[f"{policy}/off"]
        row = rows[f"{policy}/redact"]
        row["vs_off"] = statistics.fmean(a) - statistics.fmean(b)
        row["vs_off_ci95"] = paired_bootstrap_ci(a, b)
        row["changed_vs_off_ci95"] = paired_bootstrap_ci([a[i] for i in idx], [b[i] for i in idx]) if idx else (0, 0)
        row["answers_differ"] = sum(1 for x, y in zip(answers[f"{policy}/redact"], answers[f"{policy}/off"], strict=True)
                                    if x != y)
        has = [i for i, r in enumerate(records) if r["has_answer"]]
        row["has_vs_off"] = statistics.fmean([a[i] - b[i] for i in has]) if has else 0.0
        row["has_vs_off_ci95"] = paired_bootstrap_ci([a[i] for i in has], [b[i] for i in has]) if has else (0, 0)
        row["f1_up"] = sum(1 for x, y in zip(a, b, strict=True) if x > y + 1e-9)
        row["f1_down"] = sum(1 for x, y in zip(a, b, strict=True) if x < y - 1e-9)
    reads = [rereads[records[i]["id"]] for i in idx]
    by_id = {r["id"]: r for r in records}
    worse = [x for x in reads if x["redact"]["f1"] < x["off"]["f1"] - 1e-9]
    counts: Counter[str] = Counter()
    for x in reads:
        counts.update(x["counts"])
    return {
        "n": len(records), "answerable": sum(r["has_answer"] for r in records), "changed": len(idx),
        "counts": dict(counts), "in_question": sum(1 for x in reads if x.get("in_question")),
        "cloud_answer_differs": sum(1 for x in reads if x["off"]["answer"] != x["redact"]["answer"]),
        "restored": sum(1 for x in reads if x["redact"]["restored"]),
        "off_equals_record": sum(1 for x in reads if x["off"]["answer"] == by_id[x["id"]]["cloud"]["answer"]),
        "reread_ms_mean": statistics.fmean([x["off"]["total_ms"] for x in reads]) if reads else None,
        "worse": len(worse), "worse_gold_redacted": sum(1 for x in worse if _gold_redacted(x, by_id[x["id"]])),
        "rows": rows,
    }


# --- the block ------------------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Sequence[float]) -> str:
    return f"{ci[0]:.1f} – {ci[1]:.1f}"


def markdown(res: dict[str, Any], command: str = COMMAND) -> str:
    lines = [START, "", f"Generated by `{command}` ({res.get('when', '?')}). Redactor: Presidio pattern recognizers on "
             "a blank spaCy pipeline (no NER model: places and organisations are not looked for), names by the "
             "model-free given-name + surname / honorific recognizer.", ""]
    d = res.get("detection")
    if d:
        lines += [f"**Detection on a synthetic corpus** ({d['samples']} sentences, Faker seed {d['seed']}, locales "
                  f"{', '.join(LOCALES)}; national IDs from their own locales). Matching rule: a found span is a hit "
                  "when it overlaps a planted span of the same kind. Recall = planted values hit; \"whole value\" = "
                  "the same-kind spans cover every character of it; \"any kind\" = overlapped by a span of any kind "
                  "(redacted, under another label). Precision = found spans of the kind that overlap a planted value of "
                  "that kind, over every sentence (look-alikes included); \"false alarms\" = found spans that overlap "
                  "no planted value at all (the rest of the shortfall are spans on a value of another kind). Recall "
                  "intervals: 95% bootstrap over the values.", "",
                  "| kind | planted | recall | 95% CI | whole value | any kind | found | precision | false alarms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label in (*STRUCTURED, "phone, valid", NAMES_IN, f"{NAMES_IN}, middle name", NAMES_OUT,
                      f"{NAMES_OUT}, middle name"):
            g = d["groups"].get(label)
            if not g:
                continue
            k = d["kinds"].get(label, {}) if label in STRUCTURED else {}
            lo, hi = bootstrap_ci([1.0] * g["hit"] + [0.0] * (g["planted"] - g["hit"]))
            shown = {"phone, valid": "phone, only numbers libphonenumber calls valid",
                     f"{NAMES_IN}, middle name": "… of which with a middle name",
                     f"{NAMES_OUT}, middle name": "… of which with a middle name"}.get(label, label)
            lines.append(f"| {shown} | {g['planted']} | {_pct(g['recall'])} | {100 * lo:.1f} – {100 * hi:.1f} | "
                         f"{_pct(g['coverage'])} | {_pct(g['recall_any'])} | {k.get('found', '')} | "
                         f"{_pct(k.get('precision')) if k else ''} | {k.get('found_clean', '')} |")
        names = d["kinds"].get("name", {})
        look = d["groups"].get("look-alikes", {})
        alarms = d.get("false_alarms", {})
        n_look = d["samples_by_group"].get("look-alikes", 0)
        per_form = n_look // max(len(d.get("lookalike_forms", [])), 1)
        lines += ["", f"Names, both rows together: {names.get('found', 0)} spans found, precision "
                  f"{_pct(names.get('precision'))}, {names.get('found_clean', 0)} false alarms. The {n_look} look-alike "
                  f"sentences ({per_form} of each of {len(d.get('lookalike_forms', []))} forms: "
                  + ", ".join(d.get("lookalike_forms", [])) + f"; no personal data) drew {look.get('found', 0)} spans: "
                  + "; ".join(f"{what} ×{n}" for what, n in d.get("false_alarm_forms", [])) + ". E.g. "
                  + "; ".join(f"{kind} " + ", ".join(f"«{v}»" for v, _ in alarms[kind][:3]) for kind in alarms) + ". "
                  "Spans on a value of another kind (redacted all the same, under the other label): "
                  + ", ".join(f"{what} ×{n}" for what, n in d.get("mislabel_pairs", [])) + ". "
                  f"Of {d['non_persons_n']} hand-written capitalised phrases that name no person, each in a neutral "
                  f"sentence, {len(d['non_persons_taken'])} are taken for a name: "
                  + ", ".join(f"«{v}»" for v in d["non_persons_taken"]) + ".",
                  "", "Recall by source where it is below 100%:", "", "| kind: source | planted | recall | missed, e.g. |",
                  "|---|---:|---:|---|"]
        for src, c in sorted(d["sources"].items()):
            if c["recall"] is not None and c["recall"] < 1.0:
                ex = "; ".join(f"`{v}`" for v in d["missed_examples"].get(src, [])[:3])
                lines.append(f"| {src} | {c['planted']} | {_pct(c['recall'])} | {ex} |")
        lines.append("")
    q = res.get("squad")
    if q:
        c, qq = q["contexts"], q["questions"]
        kinds = sorted(set(c["spans"]) | set(qq["spans"]))
        lines += [f"**On SQuAD dev-a** (no gold labels: Wikipedia is full of real names, so this is what redaction "
                  f"touches, not an error rate): {c['n']} distinct contexts, {qq['n']} questions.", "",
                  "| kind | spans per 100 contexts | contexts touched | spans per 100 questions | questions touched |",
                  "|---|---:|---:|---:|---:|"]
        for k in kinds:
            lines.append(f"| {k} | {100 * c['spans'].get(k, 0) / c['n']:.1f} | {_pct(c['texts_touched'].get(k, 0) / c['n'])}"
                         f" | {100 * qq['spans'].get(k, 0) / qq['n']:.1f} | "
                         f"{_pct(qq['texts_touched'].get(k, 0) / qq['n'])} |")
        lines.append(f"| any | | {_pct(c['any_touched'] / c['n'])} | | {_pct(qq['any_touched'] / qq['n'])} |")
        top = c["top_values"].get("name", [])[:12]
        if top:
            lines += ["", "Most frequent name spans in the contexts: " + ", ".join(f"«{v}» {n}" for v, n in top) + "."]
        lines.append("")
    f = res.get("f1")
    if f:
        rows = f["rows"]
        lines += [f"**F1 cost on SQuAD v2**: the first {f['n']} held-out records of `make bench-models` in file order "
                  f"({f['answerable']} answerable), replayed with the packaged calibration (Tmax {BUDGET_MS:.0f} ms). "
                  f"Greedy decoding: a question whose payload (question + passages as cut and sent) is the same under "
                  f"redaction gets the same cloud reading, so its record is reused; the **{f['changed']}** whose payload "
                  "changes were read again in the cloud (Qwen2.5-Coder-1.5B, embedded stack) with `off` and with "
                  "`redact` in the same run, placeholders restored in the answer. 95% intervals: percentile bootstrap "
                  "over the questions; the difference is paired.", "",
                  "| configuration | pii | F1 | 95% CI | HasAns F1 | NoAns acc | redact − off (paired 95% CI) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        e = rows["always no-answer"]
        lines.append(f"| always no-answer | — | {e['f1']:.1f} | {_ci(e['f1_ci95'])} | 0.0 | 100.0 | |")
        for policy, label in (("cloud", "cloud only"), ("cascade", "cascade")):
            for mode in ("off", "redact"):
                r = rows[f"{policy}/{mode}"]
                diff = (f"{r['vs_off']:+.1f} ({r['vs_off_ci95'][0]:+.1f} – {r['vs_off_ci95'][1]:+.1f})"
                        if mode == "redact" else "")
                lines.append(f"| {label} | {mode} | {r['f1']:.1f} | {_ci(r['f1_ci95'])} | {r['has_ans_f1']:.1f} | "
                             f"{r['no_ans_accuracy']:.1f} | {diff} |")
        rc, rk = rows["cloud/redact"], rows["cascade/redact"]
        if f["changed"]:
            lines += ["", f"The {f['changed']} re-read questions: redaction replaced "
                      + counts_line(f["counts"])
                      + f" (distinct values per request, summed; in {f['in_question']} the question itself was redacted); "
                      f"the cloud's answer differs on {f['cloud_answer_differs']}, a placeholder was restored in "
                      f"{f['restored']}; cloud only scores higher with redaction on {rc['f1_up']}, lower on "
                      f"{rc['f1_down']}. F1 on these alone: cloud only {rows['cloud/off']['changed_f1']:.1f} → "
                      f"{rc['changed_f1']:.1f} (paired 95% CI of the difference {rc['changed_vs_off_ci95'][0]:+.1f} – "
                      f"{rc['changed_vs_off_ci95'][1]:+.1f}), cascade {rows['cascade/off']['changed_f1']:.1f} → "
                      f"{rk['changed_f1']:.1f} ({rk['changed_vs_off_ci95'][0]:+.1f} – "
                      f"{rk['changed_vs_off_ci95'][1]:+.1f}). Control: the `off` re-read gave the record's own cloud "
                      f"answer on {f['off_equals_record']} of {f['changed']} (the records were made by older code); "
                      f"cloud only on the records as written: {rows['cloud/records']['f1']:.1f}."]
        if f.get("asked_n", f["n"]) > f["n"]:
            lines += ["", f"Only the first {f['n']} of the {f['asked_n']} records asked for are reported: the run stopped "
                      "before re-reading the rest (`make bench-pii` resumes it)."]
        lines.append("")
    lat = res.get("latency")
    load = res.get("load")
    if lat:
        lines += [f"**Latency**: redacting one request (question + its top-3 passages, {lat['chars_mean']:.0f} characters "
                  f"on average) of the same {lat['n']} held-out records: p50 {lat['p50_ms']:.1f} ms, p95 "
                  f"{lat['p95_ms']:.1f} ms, max {lat['max_ms']:.0f} ms; the cascade redacts before routing (its size "
                  f"estimate), so every question pays it: {100 * lat['p50_ms'] / lat['cascade_p50_ms']:.2f}% of the "
                  f"cascade's per-question p50 ({lat['cascade_p50_ms']:.0f} ms, replayed from the records)."
                  + (f" Loading the Redactor once (a fresh process, median of {load['repeats']}): {load['total_s']:.1f} s "
                     f"({load['construct_s']:.1f} s building Presidio, spaCy and the given-name pattern; "
                     f"{load['import_s']:.1f} s importing edge.pii, {load['first_find_s']:.2f} s the first find)."
                     if load else "")
                  + " One shared 2-core machine: compare ratios, not times.", ""]
    lines += reading(res)
    lines.append(END)
    return "\n".join(lines) + "\n"


def reading(res: dict[str, Any], target: float = 0.99) -> list[str]:
    """The block's reading, from the numbers: what meets the issue's target and what does not."""
    out = []
    d = res.get("detection")
    if d:
        g = d["groups"]
        met = [k for k in STRUCTURED if k in g and g[k]["recall"] >= target]
        short = [k for k in STRUCTURED if k in g and g[k]["recall"] < target]
        weak = {k: [f"{src.split(': ', 1)[1]} {_pct(c['recall'])}" for src, c in sorted(d["sources"].items())
                    if src.startswith(f"{k}: ") and c["recall"] < target and "not a valid" not in src] for k in short}
        why = {k: ", ".join(weak[k]) or "only on numbers libphonenumber rejects" for k in short}
        line = (f"Reading: recall ≥ {100 * target:.0f}% (the issue's target) for {', '.join(met) or 'no kind'}"
                + ("; below it: " + "; ".join(f"{k} {_pct(g[k]['recall'])} ({why[k]})" for k in short) if short else "")
                + ".")
        n_in, n_out = g.get(NAMES_IN), g.get(NAMES_OUT)
        mid = g.get(f"{NAMES_IN}, middle name")
        if n_in and n_out:
            line += (f" Names: {_pct(n_in['recall'])} of names from the recognizer's own locales (circular: its given-name "
                     f"list is theirs), {_pct(n_out['recall'])} from other locales — the honest figure for a name the "
                     "list does not hold or spelt with letters outside A–Z")
            if mid:
                line += (f"; only {_pct(mid['coverage'])} of names with a middle name are covered whole (the surname "
                         "after the second word stays)")
            line += "."
        out += [line, ""]
    f = res.get("f1")
    if f:
        paragraph: list[str] = []
        for policy, label in (("cloud", "Cloud only"), ("cascade", "The cascade")):
            r = f["rows"][f"{policy}/redact"]
            lo, hi = r["vs_off_ci95"]
            verdict = "no measurable change" if lo <= 0 <= hi else ("a measurable loss" if hi < 0 else "a measurable gain")
            line = (f"{label} with redaction: {r['vs_off']:+.1f} F1 against off ({lo:+.1f} – {hi:+.1f}), {verdict} on "
                    f"these {f['n']} questions")
            if "has_vs_off" in r:
                hl, hh = r["has_vs_off_ci95"]
                has_verdict = "within noise" if hl <= 0 <= hh else ("a measurable loss" if hh < 0 else "a measurable gain")
                line += f"; on the answerable ones {r['has_vs_off']:+.1f} ({hl:+.1f} – {hh:+.1f}), {has_verdict}"
            paragraph.append(line + ".")
        if f.get("worse"):
            paragraph.append(f"Of the {f['worse']} questions whose cloud answer (before keep / drop) scores lower with "
                             f"redaction, {f['worse_gold_redacted']} have a redacted value in the gold answer: the answer "
                             "itself was hidden from the model, which seldom answers with a placeholder (one was restored "
                             f"in {f['restored']} of the {f['changed']}).")
        out += [" ".join(paragraph), ""]
    return out


# --- main -----------------------------------------------------------------------------------------------------------
PHASES = ("detection", "squad", "latency", "reread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, default=Path("bench/models/eval/records.jsonl"))
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("-n", type=int, default=300, help="the first N held-out records (file order)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--per-locale", type=int, default=PER_LOCALE)
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    ap.add_argument("--out", type=Path, default=Path("bench/pii"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", type=Path, help="only rewrite the block from a saved results.json")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        publish(res, None, markdown(res), args.benchmarks_md, START, END, HEADING)
        return
    phases = {p for p in args.phases.split(",") if p}
    if phases - set(PHASES):
        raise SystemExit(f"unknown phase(s) {sorted(phases - set(PHASES))} — use {', '.join(PHASES)}")
    results_path = args.out / "results.json"
    res: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    records = held_out(args.records, args.n)
    import edge.pii as edge_pii
    from edge.pii import Redactor
    from pipelines.calibration import Calibration
    from pipelines.cloud_path import cloud_answerer_from
    from pipelines.settings import load_settings

    redactor = Redactor()
    offline = cloud_answerer_from(load_settings(cloud_url="https://127.0.0.1:1"))  # payload() needs no gateway
    changed = changed_ids(records, redactor, offline)
    reread_path = args.out / "reread.jsonl"
    if "reread" in phases:
        reread(records, changed, redactor, reread_path)  # first: the long one, with the cores to itself
    cal = Calibration.load()
    if "latency" in phases:
        res["load"] = load_time()
        res["latency"] = redaction_latency(redactor, records, cal)
    if "detection" in phases:
        res["detection"] = detection(redactor, args.seed, args.per_locale)
    if "squad" in phases:
        res["squad"] = squad_detections(redactor, args.data)
    rereads = read_records(reread_path)
    done = complete_prefix(records, changed, rereads)
    if done:
        res["f1"] = {**f1_cost(done, changed, rereads, cal), "asked_n": len(records)}
    res["when"] = time.strftime("%Y-%m-%d")
    res["edge_pii_sha256"] = hashlib.sha256(Path(edge_pii.__file__).read_bytes()).hexdigest()[:16]  # what was measured
    publish(res, results_path, markdown(res), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
