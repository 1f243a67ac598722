"""The office's buildings (condomìni), their units, and who is linked to them.

``portineria buildings import`` reads ``code,name,address`` (optional ``ascensore`` and
``gas``: the building's own emergency numbers); the contacts import links people to
buildings by code (:func:`link_contact`). The bot asks a resident which building a
fault is about and reads the answer with :func:`match_building`, a plain function.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.exceptions import InvalidImport
from bot.services import Services
from storage.models import Building, BuildingLink, Contact, Tenant, Unit
from storage.vocabulary import BuildingRole, DataSource

BUILDING_COLUMNS = ("code", "name", "address")
EMERGENCY_COLUMNS = ("ascensore", "gas")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class BuildingRow:
    line: int
    code: str | None
    outcome: str  # imported, updated, refused
    reason: str = ""


def read_buildings_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in BUILDING_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidImport(f"missing column(s): {', '.join(missing)}")
    return list(reader)


def import_buildings(
    svc: Services, tenant: Tenant, rows: Iterable[dict[str, str]]
) -> list[BuildingRow]:
    """Every row checked and reported; valid rows written in one transaction."""
    results: list[BuildingRow] = []
    valid: list[tuple[int, str, str, str, dict[str, str]]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        code = (row.get("code") or "").strip()
        name = " ".join((row.get("name") or "").split())
        address = " ".join((row.get("address") or "").split())
        if not _CODE.fullmatch(code):
            results.append(
                BuildingRow(line, code or None, "refused", "codice mancante o non valido")
            )
        elif code.upper() in seen:
            results.append(BuildingRow(line, code, "refused", "codice ripetuto nel file"))
        elif not name or len(name) > 200 or not address or len(address) > 300:
            results.append(BuildingRow(line, code, "refused", "nome o indirizzo mancante"))
        else:
            seen.add(code.upper())
            numbers = {k: (row.get(k) or "").strip() for k in EMERGENCY_COLUMNS if row.get(k)}
            valid.append((line, code.upper(), name, address, numbers))
    with svc.db.session() as session:
        for line, code, name, address, numbers in valid:
            building = building_by_code(session, tenant.id, code)
            outcome = "updated"
            if building is None:
                building = Building(tenant_id=tenant.id, code=code)
                session.add(building)
                outcome = "imported"
            building.name, building.address = name, address
            building.emergency_numbers = numbers
            results.append(BuildingRow(line, code, outcome))
    return sorted(results, key=lambda r: r.line)


def building_by_code(session: Session, tenant_id: int, code: str) -> Building | None:
    return session.scalar(
        select(Building).where(Building.tenant_id == tenant_id, Building.code == code.upper())
    )


def tenant_buildings(session: Session, tenant_id: int) -> list[Building]:
    return list(
        session.scalars(
            select(Building).where(Building.tenant_id == tenant_id).order_by(Building.code)
        )
    )


def contact_buildings(session: Session, contact_id: int) -> list[Building]:
    """The buildings a contact is linked to, by code."""
    return list(
        session.scalars(
            select(Building)
            .join(BuildingLink, BuildingLink.building_id == Building.id)
            .where(BuildingLink.contact_id == contact_id)
            .order_by(Building.code)
        )
    )


def link_contact(
    session: Session,
    contact: Contact,
    building: Building,
    *,
    role: BuildingRole | None,
    scala: str = "",
    interno: str = "",
    source: DataSource,
) -> BuildingLink:
    """Link (or re-link) a contact to a building, with their unit where one is given."""
    unit = _unit(session, building, scala, interno) if (scala or interno) else None
    link = session.scalar(
        select(BuildingLink).where(
            BuildingLink.contact_id == contact.id, BuildingLink.building_id == building.id
        )
    )
    if link is None:
        link = BuildingLink(
            tenant_id=contact.tenant_id,
            contact_id=contact.id,
            building_id=building.id,
            source=source,
        )
        session.add(link)
    if role is not None:
        link.role = role
    if unit is not None:
        link.unit_id = unit.id
    session.flush()
    return link


def _unit(session: Session, building: Building, scala: str, interno: str) -> Unit:
    unit = session.scalar(
        select(Unit).where(
            Unit.building_id == building.id, Unit.scala == scala, Unit.interno == interno
        )
    )
    if unit is None:
        unit = Unit(
            tenant_id=building.tenant_id, building_id=building.id, scala=scala, interno=interno
        )
        session.add(unit)
        session.flush()
    return unit


def place_json(link: BuildingLink) -> dict[str, Any]:
    """A contact's place in a building, as the API and the exports show it."""
    return {
        "building": link.building.code,
        "role": link.role,
        "scala": link.unit.scala if link.unit else None,
        "interno": link.unit.interno if link.unit else None,
    }


def contact_unit(session: Session, contact_id: int, building_id: int) -> Unit | None:
    link = session.scalar(
        select(BuildingLink).where(
            BuildingLink.contact_id == contact_id, BuildingLink.building_id == building_id
        )
    )
    return session.get(Unit, link.unit_id) if link is not None and link.unit_id else None


# -- reading a resident's answer ------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A building as the bot offers it and reads it back: plain data, no session."""

    id: int
    code: str
    name: str
    address: str


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9]+", plain)


# Words that say nothing about which building: "via", "il condominio", "numero"...
_FILLER = frozenset(
    "via viale piazza corso largo vicolo il la lo le i gli di del della dei in a al alla "
    "condominio palazzo stabile numero n civico sono abito è e".split()
)


def match_building(
    answer: str, offered: Sequence[Choice], known: Sequence[Choice]
) -> Choice | None:
    """The building an answer names: a number from the list offered ("2"), or a code,
    name or address of one of the office's buildings ("via Roma 12", "Condominio
    Aurora"). ``None`` when nothing, or more than one building, fits."""
    words = _words(answer)
    if len(words) == 1 and words[0].isdigit() and offered:
        index = int(words[0]) - 1
        return offered[index] if 0 <= index < len(offered) else None
    meaningful = [w for w in words if w not in _FILLER]
    if not meaningful:
        return None
    fitting = []
    for building in known:
        if building.code.lower() in words:
            return building
        own = set(_words(f"{building.name} {building.address}")) - _FILLER
        # Every word the resident gave must be the building's (a street and its number).
        if all(w in own for w in meaningful):
            fitting.append(building)
    return fitting[0] if len(fitting) == 1 else None


def choices(buildings: Iterable[Building]) -> list[Choice]:
    return [Choice(b.id, b.code, b.name, b.address) for b in buildings]
