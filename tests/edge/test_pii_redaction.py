"""Personal data kept on the device (edge/pii.py): Presidio's recognizers, offline, one placeholder per value
across the request, the values put back in the answer, and the NER archive refused unless it is the official one."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
from pathlib import Path

import pytest

from edge.errors import PiiBlockedError, PiiModelError
from edge.pii import Redactor, counts_line, placeholders, unpack_ner_archive
from reading.prompts import Passage

QUESTION = "What did Jane Roe (jane.roe@example.org, +44 20 7946 0958) pay with card 4111 1111 1111 1111?"
PASSAGE = Passage("Payments of Jane Roe", "Jane Roe paid with 4111-1111-1111-1111 on 31 December 1687. Write to "
                  "JANE.ROE@example.org or fetch ftp://bob:s3cret@files.example.com/q3.csv. Her IBAN is "
                  "GB82 WEST 1234 5698 7654 32; the server was 10.0.0.7. Marcus Whitfield signed.")
VALUES = ("Jane Roe", "jane.roe@example.org", "JANE.ROE@example.org", "+44 20 7946 0958", "4111 1111 1111 1111",
          "4111-1111-1111-1111", "bob:s3cret", "GB82 WEST 1234 5698 7654 32", "10.0.0.7", "Marcus Whitfield")


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def test_every_value_is_replaced_and_one_value_keeps_one_placeholder_across_the_request(redactor: Redactor) -> None:
    red = redactor.redact(QUESTION, [PASSAGE])
    sent = " ".join([red.question, red.passages[0].title, red.passages[0].text])
    for value in VALUES:
        assert value not in sent, value
    assert red.question == "What did <PERSON_1> (<EMAIL_1>, <PHONE_1>) pay with card <CARD_1>?"
    text = red.passages[0].text
    # The same card in another format, the same e-mail in capitals: the same placeholder as in the question.
    assert text.startswith("<PERSON_1> paid with <CARD_1> on 31 December 1687. Write to <EMAIL_1> or fetch <URL_1>.")
    assert red.passages[0].title == "Payments of <PERSON_1>" and "<PERSON_2> signed." in text
    assert red.counts == {"name": 2, "email": 1, "phone": 1, "card": 1, "url": 1, "iban": 1, "ip": 1}
    assert red.in_question == {"name": 1, "email": 1, "phone": 1, "card": 1}
    assert counts_line(red.counts) == ("2 names, 1 email, 1 phone number, 1 card, 1 IBAN, 1 IP address, "
                                       "1 URL with credentials")
    assert red.restore(red.question) == QUESTION  # the values, exactly as the user wrote them
    assert [red.question[a:b] for a, b in placeholders(red.question)] == ["<PERSON_1>", "<EMAIL_1>", "<PHONE_1>",
                                                                          "<CARD_1>"]


def test_restore_takes_the_forms_a_model_echoes_and_leaves_unknown_placeholders(redactor: Redactor) -> None:
    red = redactor.redact(QUESTION, [])
    assert red.restore("<PERSON_1>") == "Jane Roe"
    assert red.restore("PERSON_1 paid, mail <EMAIL 1>") == "Jane Roe paid, mail jane.roe@example.org"
    assert red.restore("<PERSON_7> and ID 2 and PERSON_10") == "<PERSON_7> and ID 2 and PERSON_10"
    assert red.restores("<CARD_1>") and not red.restores("no placeholder here")


@pytest.mark.parametrize("card", ["2602433101946060", "2242 9829 5124 3859", "6759 4342 2146", "5018-2989-9241",
                                  "4291 5553 4152 9", "3041 0053 6480 23", "378282246310005"])
def test_every_network_s_card_is_found(redactor: Redactor, card: str) -> None:
    """Mastercard 2-series, Maestro, 13- and 14-digit cards in groups: Presidio's default pattern missed them."""
    assert redactor.redact(f"paid with {card}.", []).question == "paid with <CARD_1>."


def test_lookalikes_are_left_alone(redactor: Redactor) -> None:
    text = ("On 31 December 1687 the first group sailed; in 1066, 1,250 men paid £3,400; in 1851–1860 20 mills. "
            "Version 2.0.1 of ISBN "
            "978-3-16-148410-0 lists card 4111 1111 1111 1112 (fails Luhn) and William the Conqueror.")
    red = redactor.redact(text, [])
    assert red.question == text and red.counts == {}


def test_a_url_with_credentials_wins_over_the_email_inside_it(redactor: Redactor) -> None:
    red = redactor.redact("Fetch https://ann:pw@mail.example.com/inbox now", [])
    assert red.question == "Fetch <URL_1> now" and red.counts == {"url": 1}


def test_a_name_split_across_a_line_break_is_still_found(redactor: Redactor) -> None:
    red = redactor.redact("Ask Jane\nRoe about it", [])
    assert "Jane" not in red.question and red.counts == {"name": 1}
    assert red.restore(red.question) == "Ask Jane\nRoe about it"


def test_block_refuses_a_question_with_personal_data_and_names_the_kinds(redactor: Redactor) -> None:
    with pytest.raises(PiiBlockedError) as exc:
        redactor.check_question(QUESTION)
    message = str(exc.value)
    assert "1 name, 1 email, 1 phone number, 1 card" in message and "ECQA_PII=redact" in message
    assert "\n" not in message and not any(v in message for v in VALUES)  # kinds, never values
    assert exc.value.counts == {"name": 1, "email": 1, "phone": 1, "card": 1}
    redactor.check_question("Who was the first ruler of Normandy?")  # nothing personal: no refusal


def test_a_100_kb_passage_is_redacted_in_bounded_time(redactor: Redactor) -> None:
    filler = "The duchy grew under its dukes and their barons for many years. "
    text = (filler * 1600)[:100_000] + " Mail jane.roe@example.org."
    t0 = time.perf_counter()
    red = redactor.redact("Who?", [Passage("Long", text)])
    # 0.4 s here; Presidio's own low-score PAN pattern made it 30 s (quadratic: edge.pii.PAN_LOW)
    assert time.perf_counter() - t0 < 5 and red.counts == {"email": 1}
    assert red.passages[0].text.endswith("Mail <EMAIL_1>.")


def test_no_network_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Presidio's AnalyzerEngine() downloads a missing spaCy model; tldextract fetches the suffix list."""
    tried: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        tried.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    red = Redactor().redact("Mail jane.roe@example.co.uk or visit https://a:b@example.org", [])
    assert red.counts == {"email": 1, "url": 1} and tried == []


# --- the NER model's archive --------------------------------------------------------------------------------------
def _archive(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_missing_or_unofficial_archive_is_one_line_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PiiModelError, match="no NER archive at .* download en_core_web_sm-3.8.0.tar.gz"):
        unpack_ner_archive(tmp_path / "nope.tar.gz", tmp_path / "out")
    fake = tmp_path / "en_core_web_sm-3.8.0.tar.gz"
    _archive(fake, {"en_core_web_sm-3.8.0/meta.json": b"{}"})
    with pytest.raises(PiiModelError, match="is not the official en_core_web_sm-3.8.0.tar.gz .* re-uploads are refused"):
        unpack_ner_archive(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing of it was unpacked


def test_an_archive_with_a_path_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    digest = _archive(evil, {"../outside.txt": b"x"})
    with pytest.raises(PiiModelError, match="cannot unpack"):
        unpack_ner_archive(evil, tmp_path / "out", sha256=digest)
    assert not (tmp_path / "outside.txt").exists()


def test_a_verified_model_is_unpacked_once_and_its_ner_finds_places_and_organisations(tmp_path: Path) -> None:
    """The load path with a model built here (the official archive cannot be fetched on this machine): a spaCy
    pipeline whose "ner" component is an entity ruler, packed like the release and pinned by its own hash."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", name="ner")
    ruler.add_patterns([{"label": "GPE", "pattern": "Brindlewick"}, {"label": "ORG", "pattern": "Fenwright Bank"}])
    model = tmp_path / "build" / "en_core_web_sm-3.8.0" / "en_core_web_sm" / "en_core_web_sm-3.8.0"
    model.parent.mkdir(parents=True)
    nlp.to_disk(model)
    archive = tmp_path / "en_core_web_sm-3.8.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "en_core_web_sm-3.8.0", arcname="en_core_web_sm-3.8.0")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    folder = unpack_ner_archive(archive, tmp_path / "models", sha256=digest)
    assert folder.name == "en_core_web_sm-3.8.0" and (folder / "config.cfg").is_file()
    assert unpack_ner_archive(archive, tmp_path / "models", sha256=digest) == folder  # once
    red = Redactor(folder).redact("Did Fenwright Bank open in Brindlewick?", [])
    assert red.question == "Did <ORG_1> open in <PLACE_1>?" and red.counts == {"organization": 1, "place": 1}
    assert Redactor(folder).undetected == () and Redactor().undetected == ("place", "organization")


def test_the_low_score_pan_pattern_keeps_its_matches_in_linear_time() -> None:
    """The bounded pattern finds what Presidio's finds in a token (a letter and four digits in ten characters), and
    a passage twice as long costs about twice as much, not four times."""
    import regex

    from edge.pii import PAN_LOW

    text = "Filed under PAN A1BC2345DE and ref 12345ABCDE; 'duchies' 1234567890 has no letter."
    assert [m.group(0) for m in regex.finditer(PAN_LOW, text)] == ["A1BC2345DE", "12345ABCDE"]
    filler = "The duchy grew under its dukes and their barons for many years. "

    def cost(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(3):
            list(regex.finditer(PAN_LOW, (filler * 2000)[:n], flags=regex.DOTALL | regex.MULTILINE | regex.IGNORECASE))
        return time.perf_counter() - t0

    assert cost(100_000) < 3 * cost(50_000)
