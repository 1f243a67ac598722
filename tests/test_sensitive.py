"""Sensitive-data detection: every kind in several forms, every near miss, offsets,
redaction, robustness on arbitrary text, and the figures on the labelled set."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schwifty import IBAN
from stdnum import luhn
from stdnum.it import codicefiscale, iva

from intents.sensitive import (
    REDACTION_LABELS,
    SENSITIVE_KINDS,
    Finding,
    find_sensitive,
    redact,
)

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "intents" / "data" / "pii_labelled.jsonl"

# ---------------------------------------------------------------------------
# Synthetic identifiers, computed with the libraries' own check-digit functions.
# ---------------------------------------------------------------------------

_MONTHS = "ABCDEHLMPRST"
_PLACES = ("F205", "H501", "L219", "F839", "A944", "G273")


def make_codice_fiscale(rng: random.Random, valid: bool = True) -> str:
    letters = "".join(rng.choice("BCDFGLMNPRSTVZ") for _ in range(6))
    day = rng.randint(1, 28) + rng.choice((0, 40))
    body = f"{letters}{rng.randint(30, 99)}{rng.choice(_MONTHS)}{day:02d}{rng.choice(_PLACES)}"
    check = codicefiscale.calc_check_digit(body)
    if not valid:
        check = rng.choice([c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != check])
    return body + check


def make_partita_iva(rng: random.Random, valid: bool = True) -> str:
    head = f"{rng.randint(1, 9_999_999):07d}{rng.randint(1, 100):03d}"
    check = luhn.calc_check_digit(head)
    if not valid:
        check = rng.choice([d for d in "0123456789" if d != check])
    return head + check


def make_iban(rng: random.Random) -> str:
    account = f"{rng.randint(0, 10**12 - 1):012d}"
    return str(IBAN.generate("IT", bank_code="0306909606", account_code=account))


def grouped(value: str, size: int = 4) -> str:
    return " ".join(value[i : i + size] for i in range(0, len(value), size))


RNG = random.Random(1234)
CF = make_codice_fiscale(RNG)
CF_OTHER = make_codice_fiscale(RNG)
CF_BAD = make_codice_fiscale(RNG, valid=False)
PIVA = make_partita_iva(RNG)
PIVA_BAD = make_partita_iva(RNG, valid=False)
IBAN_OK = make_iban(RNG)
IBAN_BAD_CHECK = IBAN_OK[:2] + f"{(int(IBAN_OK[2:4]) + 1) % 97 + 2:02d}" + IBAN_OK[4:]


def test_generated_identifiers_are_what_they_claim() -> None:
    assert codicefiscale.is_valid(CF) and codicefiscale.is_valid(CF_OTHER)
    assert not codicefiscale.is_valid(CF_BAD)
    assert iva.is_valid(PIVA) and not iva.is_valid(PIVA_BAD)
    IBAN(IBAN_OK, validate_bban=True)
    assert not IBAN(IBAN_BAD_CHECK, allow_invalid=True).is_valid


def kinds(text: str) -> set[str]:
    return {f.kind for f in find_sensitive(text)}


def spans(text: str, kind: str) -> list[str]:
    return [f.text for f in find_sensitive(text) if f.kind == kind]


# ---------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Il mio codice fiscale è {cf}, grazie", "{cf}"),
        ("cf {low}", "{low}"),
        ("codice fiscale: {spaced} per la ricevuta", "{spaced}"),
        ("CF del conduttore {hyphen}.", "{hyphen}"),
        ("{cf}", "{cf}"),
    ],
)
def test_codice_fiscale_forms(template: str, expected: str) -> None:
    forms = {
        "cf": CF,
        "low": CF.lower(),
        "spaced": f"{CF[:3]} {CF[3:6]} {CF[6:11]} {CF[11:]}",
        "hyphen": f"{CF[:6]}-{CF[6:11]}-{CF[11:]}",
    }
    text = template.format(**forms)
    assert spans(text, "codice_fiscale") == [expected.format(**forms)]


def test_two_codici_fiscali_in_one_message() -> None:
    text = f"usufruttuario {CF}, nudo proprietario {CF_OTHER}"
    assert spans(text, "codice_fiscale") == [CF, CF_OTHER]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("La nostra partita IVA è {p}", "{p}"),
        ("P.IVA IT{p} - Idraulica Sarti", "IT{p}"),
        ("p iva IT {p}", "IT {p}"),
        ("PIVA{p}", "{p}"),
        ("C.F. e P.IVA {p}, codice SDI M5UXCR1", "{p}"),
    ],
)
def test_partita_iva_forms(template: str, expected: str) -> None:
    text = template.format(p=PIVA)
    assert spans(text, "partita_iva") == [expected.format(p=PIVA)]
    assert "phone" not in kinds(text)


@pytest.mark.parametrize(
    "form",
    [IBAN_OK, grouped(IBAN_OK), IBAN_OK.lower(), grouped(IBAN_OK).lower()],
    ids=["compact", "grouped", "lower", "grouped-lower"],
)
def test_iban_forms(form: str) -> None:
    text = f"IBAN per il rimborso: {form} grazie mille"
    assert spans(text, "iban") == [form]
    # Its digits are not also a phone number or a VAT number.
    assert kinds(text) == {"iban"}


@pytest.mark.parametrize(
    "raw",
    [
        "+39 347 123 4567",
        "0039 3471234567",
        "340/1234567",
        "333.21.64.908",
        "3331234567",
        "347 12 34 567",
        "347-1234567",
        "+393471234567",
    ],
)
def test_mobile_phone_forms(raw: str) -> None:
    assert spans(f"chiamatemi al {raw} dopo le 18", "phone") == [raw]


def test_phone_glued_to_its_label() -> None:
    assert spans("tel3471234567", "phone") == ["3471234567"]


def test_landline_needs_phone_context() -> None:
    assert spans("richiamatemi allo 06 1234 5678 in orario d'ufficio", "phone") == ["06 1234 5678"]
    assert spans("Ordine 0612345678 in consegna domani", "phone") == []


@pytest.mark.parametrize(
    "address",
    [
        "mario.rossi@gmail.com",
        "AMMINISTRAZIONE@EDILNORD.IT",
        "studio.rinaldi@pec.it",
        "f_bianchi+condominio@libero.it",
    ],
)
def test_email_forms(address: str) -> None:
    assert spans(f"scrivete a {address}, grazie", "email") == [address]


# ---------------------------------------------------------------------------
# Health data and identity documents
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("Ho la legge 104 per mio figlio", "legge 104"),
        ("sono titolare dei permessi della 104", "permessi della 104"),
        ("beneficiario L.104/92", "L.104/92"),
        ("mia madre è in sedia a rotelle", "sedia a rotelle"),
        ("sono invalido al 100%", "invalido"),
        ("invalidità civile riconosciuta", "invalidità"),
        ("il signore del quarto è disabile", "disabile"),
        ("mio marito fa la chemio il martedì", "chemio"),
        ("sono stata ricoverata due settimane", "ricoverata"),
        ("buonasera, sono in ospedale", "in ospedale"),
        ("Sono incinta di sette mesi", "incinta"),
        ("mia moglie è in gravidanza a rischio", "gravidanza"),
        ("aspettiamo una bambina a maggio", "aspettiamo una bambina"),
        ("allego il certificato medico", "certificato medico"),
        ("ho un certificato del medico per le scale", "certificato del medico"),
        ("dopo l'intervento chirurgico al ginocchio", "chirurgico"),
        ("SONO STATO OPERATO ALLA SCHIENA", "STATO OPERATO"),
        ("mi sono rotta il femore", "mi sono rotta il femore"),
        ("usa le stampelle da un mese", "stampelle"),
        ("ho avuto un infarto a gennaio", "infarto"),
        ("mia suocera ha l'alzheimer", "alzheimer"),
        ("sono diabetico", "diabetico"),
        ("la signora è non vedente", "non vedente"),
        ("sono affetta da una malattia rara", "affetta da"),
        ("ho l'influenza e non posso aprire", "ho l'influenza"),
    ],
)
def test_health_mentions(text: str, span: str) -> None:
    assert span in spans(text, "health")


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("Vi mando la foto della carta d'identità per la delega", "carta d'identità"),
        ("Ti mando carta d identita fronte e retro", "carta d identita"),
        ("Come richiesto ecco la carta d’identità elettronica", "carta d’identità elettronica"),
        ("allego copia del documento d'identità del delegante", "documento d'identità"),
        ("foto CIE allegata", "CIE"),
        ("Ecco il passaporto del nuovo inquilino", "passaporto"),
        ("passaporto.pdf", "passaporto.pdf"),
        ("📎 carta d'identità.pdf", "carta d'identità.pdf"),
        ("ho scansionato la patente, ve la giro qui", "patente"),
        ("ho fotografato la patente ma si legge male", "patente"),
        ("eccovi il permesso di soggiorno del collaboratore", "permesso di soggiorno"),
    ],
)
def test_identity_documents_being_sent(text: str, span: str) -> None:
    assert spans(text, "identity_document") == [span]


# ---------------------------------------------------------------------------
# Near misses: nothing sensitive may be reported.
# ---------------------------------------------------------------------------

NEAR_MISSES = [
    f"Il codice articolo del termostato da ordinare è {CF_BAD}",
    f"codice prodotto {CF_BAD.lower()}",
    f"Ordine n. {PIVA_BAD} confermato",
    f"CRO del bonifico {PIVA_BAD}, importo 350,00",
    f"il codice IBAN {grouped(IBAN_BAD_CHECK)} non passa",
    "Fattura n. 2024/0318 del 14/03/2024, importo 1.250,00 euro",
    "fattura n. 0612345678 del 12/03/2024",
    "Fattura n. 3392817465 della ditta Galbiati",
    "il codice cliente è 3471229980",
    "totale da pagare 1.347,12 euro entro il 31/05/2024",
    "l'appuntamento è il 12/03/2024 alle 10:30",
    "Buongiorno, POD IT001E12345678 per la voltura della luce scale",
    "PDR del gas: 12345678901234",
    "per guasti chiamate il numero verde 800 123 456",
    "seguiteci su instagram @condominiolerose",
    "taggate @pippo_rossi nella chat",
    "Mi mandate l'IBAN del condominio per pagare la rata?",
    "scusate l'iban che mi avete dato è sbagliato",
    "Abito all'interno 104, scala C, il citofono non suona",
    "Via Garibaldi 104, la luce del portone è spenta",
    "Il tecnico ha lasciato il certificato di conformità dell'impianto elettrico?",
    "il ragazzo del magazzino ha il patentino del muletto",
    "la patente a crediti della ditta edile è in regola?",
    "questi rumori mi fanno venire il mal di testa",
    "sto male con questo ritardo, sono tre mesi che aspetto",
    "Se arriva un'altra bolletta così mi viene un infarto",
    "a momenti mi veniva un infarto quando ho visto il conguaglio",
    "prezzi da infarto per il tetto",
    "peggio di una gravidanza questi lavori",
    "questa pratica dura più di una gravidanza",
    "il ricovero attrezzi del giardiniere è aperto",
    "manca la cassetta di pronto soccorso nel locale caldaia",
    "serve la diagnosi energetica per l'ecobonus",
    "il braccio del cancello automatico si è rotto di nuovo",
    "la sbarra del garage ha il braccio rotto",
    "La delibera è invalida perché mancava il numero legale",
    "secondo il mio avvocato c'è l'invalidità della delibera",
    "le carrozzine e i passeggini nell'androne vanno tolti",
    "la rampa per i disabili è stata approvata?",
    "vicino all'ospedale c'è il nostro secondo condominio",
    "l'ascensore è malato, si blocca ogni due giorni",
    "ho il cane malato di cuore",
    "Serve la carta d'identità per votare in assemblea?",
    "ho allegato il modulo. Ho la patente scaduta",
    "vi mando la foto della macchia di umidità in camera",
    "l'operato dell'amministratore sarà discusso in assemblea",
    "parto domani per le ferie",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_miss_is_not_flagged(text: str) -> None:
    assert find_sensitive(text) == []


# ---------------------------------------------------------------------------
# Offsets, ordering, redaction
# ---------------------------------------------------------------------------


def test_offsets_and_order() -> None:
    email = "irene.sala@libero.it"
    text = f"Mi chiamo Irene, CF {CF.lower()}, mail {email}, sono incinta. Cell +39 347 123 4567"
    findings = find_sensitive(text)
    assert [f.kind for f in findings] == ["codice_fiscale", "email", "health", "phone"]
    for finding in findings:
        assert text[finding.start : finding.end] == finding.text
    cf = findings[0]
    assert (cf.start, cf.end) == (text.index(CF.lower()), text.index(CF.lower()) + 16)
    assert findings[-1].end == len(text)


def test_finding_is_frozen() -> None:
    finding = Finding("email", 0, 5, "a@b.it")
    with pytest.raises(AttributeError):
        finding.kind = "phone"  # type: ignore[misc]


def test_redact_replaces_every_span_with_its_placeholder() -> None:
    text = (
        f"CF {CF}, IBAN {grouped(IBAN_OK)}, P.IVA {PIVA}, mail a.b@libero.it, "
        "cell 347 1234567. Mando la foto della patente, ho la 104."
    )
    assert redact(text) == (
        "CF [codice fiscale], IBAN [IBAN], P.IVA [partita IVA], mail [email], "
        "cell [telefono]. Mando la foto della [documento d'identità], ho [dato sanitario]."
    )


def test_redact_uses_given_findings_and_merges_overlaps() -> None:
    text = "abcdefghij"
    findings = [Finding("phone", 2, 6, "cdef"), Finding("email", 4, 8, "efgh")]
    assert redact(text, findings) == "ab[telefono]ij"
    assert redact(text, []) == text


def test_redact_without_findings_leaves_text_alone() -> None:
    text = "Il citofono dell'interno 14 suona a vuoto"
    assert redact(text) == text


def test_every_kind_has_a_placeholder() -> None:
    assert set(REDACTION_LABELS) == set(SENSITIVE_KINDS)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_never_raises_and_spans_lie_inside_the_text(text: str) -> None:
    findings = find_sensitive(text)
    assert findings == sorted(findings, key=lambda f: f.start)
    for finding in findings:
        assert finding.kind in SENSITIVE_KINDS
        assert 0 <= finding.start < finding.end <= len(text)
        assert text[finding.start : finding.end] == finding.text
    redact(text, findings)


_DIGITS_AND_SEPARATORS = st.text(alphabet="0123456789 .-/+ITit€,", max_size=60)


@settings(max_examples=200, deadline=None)
@given(_DIGITS_AND_SEPARATORS)
def test_number_soup_spans_lie_inside_the_text(text: str) -> None:
    for finding in find_sensitive(text):
        assert text[finding.start : finding.end] == finding.text


_CONTEXT = st.sampled_from(["", "cf ", "Il mio codice è ", "ecco: ", "("])
_TAIL = st.sampled_from(["", " grazie", ".", ", saluti", ")"])


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), _CONTEXT, _TAIL, st.booleans())
def test_any_valid_codice_fiscale_is_found(
    rng: random.Random, before: str, after: str, lower: bool
) -> None:
    cf = make_codice_fiscale(rng)
    cf = cf.lower() if lower else cf
    assert spans(before + cf + after, "codice_fiscale") == [cf]


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), _CONTEXT, _TAIL)
def test_a_wrong_control_letter_is_never_a_codice_fiscale(
    rng: random.Random, before: str, after: str
) -> None:
    assert spans(before + make_codice_fiscale(rng, valid=False) + after, "codice_fiscale") == []


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_partita_iva_is_found_only_with_its_check_digit(rng: random.Random, valid: bool) -> None:
    number = make_partita_iva(rng, valid=valid)
    assert spans(f"partita iva {number}", "partita_iva") == ([number] if valid else [])


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_any_valid_iban_is_found_grouped_or_not(rng: random.Random, group: bool) -> None:
    value = make_iban(rng)
    form = grouped(value) if group else value
    assert spans(f"iban {form} intestato a me", "iban") == [form]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=9_999_999), st.sampled_from(["347", "333", "340", "392"]))
def test_any_valid_mobile_number_is_found(number: int, prefix: str) -> None:
    raw = f"{prefix}{number:07d}"
    assert phonenumbers.is_valid_number(phonenumbers.parse(raw, "IT"))
    assert spans(f"il mio cellulare è {raw}", "phone") == [raw]


# ---------------------------------------------------------------------------
# Process-level behaviour and the labelled set
# ---------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_does_not_load_spacy() -> None:
    # Loaded from its file so that whatever the package __init__ imports is not measured.
    result = _run(
        """
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("sensitive_probe", "intents/sensitive.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["sensitive_probe"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        assert "spacy" not in sys.modules, "spacy imported at import time"
        module.find_sensitive("sono in ospedale")
        assert "spacy" in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_matchers_are_built_once_under_concurrent_first_use() -> None:
    result = _run(
        """
        import threading
        from intents import sensitive
        seen, results = [], []
        barrier = threading.Barrier(8)
        def work():
            barrier.wait()
            seen.append(sensitive._get_vocabulary())
            results.append(sensitive.find_sensitive("ho la 104, cell 3471234567"))
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len({id(v) for v in seen}) == 1
        assert all(r == results[0] for r in results) and len(results[0]) == 2
        """
    )
    assert result.returncode == 0, result.stderr


def test_labelled_set_is_large_and_well_formed() -> None:
    rows = [json.loads(line) for line in LABELLED.read_text("utf-8").splitlines() if line]
    assert len(rows) >= 250
    assert all(set(row["pii"]) <= set(SENSITIVE_KINDS) for row in rows)
    assert len({row["text"].lower() for row in rows}) == len(rows)
    empty = sum(1 for row in rows if not row["pii"])
    assert empty / len(rows) >= 0.25
    for kind in SENSITIVE_KINDS:
        assert sum(kind in row["pii"] for row in rows) >= 15, kind


def test_precision_and_recall_on_the_labelled_set() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import pii_bench
    finally:
        sys.path.remove(str(ROOT / "bench"))
    micro = pii_bench.evaluate(LABELLED).micro
    assert micro.precision >= 0.95, micro
    assert micro.recall >= 0.95, micro


def test_a_text_the_matcher_finds_health_or_documents_in_passes_the_anchor_test() -> None:
    # The anchor test lets most texts skip the Matcher; it must never skip one the
    # Matcher has something to say about (a match, or a blocker beside a phrase's).
    from intents.sensitive import _get_vocabulary

    vocab = _get_vocabulary()
    texts = [json.loads(line)["text"] for line in LABELLED.read_text("utf-8").splitlines()]
    matched = 0
    for text in texts:
        doc = vocab.nlp.make_doc(text)
        positives = [
            m
            for m in vocab.matcher(doc)
            if not vocab.nlp.vocab.strings[m[0]].split("|")[0].endswith("!")
        ]
        if positives:
            matched += 1
            assert vocab.has_anchor(doc), text
    assert matched >= 50  # the set exercises the patterns, not only the identifiers
