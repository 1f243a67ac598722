"""The demo accounts ``portineria dev`` seeds and prints: an admin and an operator, so
a newcomer sees both the administration and what an operator sees; and the demo
office's world (two buildings, residents, two suppliers, the work-order templates),
so a fault can be walked through a work order in the simulator and the console."""

from __future__ import annotations

import base64
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from bot.office.accounts import create_user, hash_password
from bot.office.settings import update_settings
from bot.services import Services
from storage.models import Tenant, User
from storage.vocabulary import Role

# The account's name in the demo office, per role.
DEMO_NAMES = {Role.ADMIN: "amministratore", Role.OPERATOR: "operatore"}
# Named in the welcome (see bot.office.readiness): the demo office is live.
DEMO_PROPER_CHANNEL = "l'email info@studio-demo.example o la PEC studio-demo@pec.example"


def demo_credentials(secret_key: str, tenant: Tenant, role: str = Role.OPERATOR) -> tuple[str, str]:
    """Derived from the instance's secret key: stable across restarts, unique per install."""
    name = DEMO_NAMES[Role(role)]
    salt = "portineria-demo-operator" if role == Role.OPERATOR else f"portineria-demo-{role}"
    digest = hmac.new(
        secret_key.encode(), f"{salt}:{tenant.slug}".encode(), hashlib.sha256
    ).digest()
    password = base64.b32encode(digest).decode().lower()[:16]
    return f"{name}@{tenant.slug}.example", password


def seed_demo_operator(svc: Services, tenant: Tenant, role: str = "operator") -> tuple[str, str]:
    """Make sure the demo account of ``role`` exists, active, unlocked, with that role
    and the derived password.

    Idempotent: a second call finds the account and returns the same credentials.
    """
    email, password = demo_credentials(str(svc.config["SECRET_KEY"]), tenant, role)
    with svc.db.session() as session:
        user = session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == email))
        if user is None:
            create_user(session, tenant, email, role, password)
            return email, password
        if not _matches(user.password_hash, password):
            user.password_hash = hash_password(password)
        # An older demo made the "operatore" an admin: it is an operator now.
        user.role = Role(role)
        user.active, user.failed_logins, user.locked_until = True, 0, None
    return email, password


def seed_demo_accounts(svc: Services, tenant: Tenant) -> dict[Role, tuple[str, str]]:
    """The demo admin and the demo operator (email, password), admin first."""
    return {role: seed_demo_operator(svc, tenant, role) for role in (Role.ADMIN, Role.OPERATOR)}


def make_demo_office_live(svc: Services, tenant: Tenant) -> None:
    """Give the demo office the proper channel its welcome names (once: an admin may
    change it from the console afterwards)."""
    if (tenant.settings or {}).get("proper_channel"):
        return
    update_settings(
        svc, tenant.id, {"proper_channel": DEMO_PROPER_CHANNEL}, actor="system:portineria-dev"
    )


# The demo office's world, as the office's own CSV files would give it.
DEMO_BUILDINGS = (
    {
        "code": "AUR",
        "name": "Condominio Aurora",
        "address": "via Roma 12, Milano",
        "ascensore": "800 111 222",
        "gas": "800 900 999",
    },
    {"code": "GIR", "name": "Condominio Girasole", "address": "viale Monza 40, Milano"},
)
DEMO_CONSENT = "2026-01-15T10:00:00+01:00"
DEMO_PEOPLE = (
    {
        "phone": "+393331112201",
        "kind": "condomino",
        "legal_basis": "consent",
        "name": "Anna Bianchi",
        "building": "AUR",
        "scala": "B",
        "interno": "7",
        "role": "proprietario",
    },
    {
        "phone": "+393331112202",
        "kind": "condomino",
        "legal_basis": "consent",
        "building": "AUR",
        "scala": "A",
        "interno": "2",
        "role": "inquilino",
    },
    {
        "phone": "+393331112203",
        "kind": "condomino",
        "legal_basis": "consent",
        "building": "GIR",
        "scala": "",
        "interno": "5",
        "role": "inquilino",
    },
    {
        "phone": "+393351110001",
        "kind": "fornitore",
        "legal_basis": "contract",
        "name": "Idraulica Rossi",
        "role": "fornitore",
        "trade": "idraulico",
    },
    {
        "phone": "+393351110002",
        "kind": "fornitore",
        "legal_basis": "contract",
        "name": "Elettro Verdi",
        "role": "fornitore",
        "trade": "elettricista",
    },
)
DEMO_SETTINGS = {
    # Placeholders: with the console transport nothing reaches Meta; a live office sets
    # its own approved ContentSids.
    "templates.work_order": "HX" + "0" * 31 + "1",
    "templates.ticket_update": "HX" + "0" * 31 + "2",
    "office.address": "via Dante 3, Milano",
    "office.pec": "studio-demo@pec.example",
    "office.email": "info@studio-demo.example",
    **{
        f"hours.{day}": [["09:00", "13:00"], ["14:30", "18:00"]]
        for day in ("mon", "tue", "wed", "thu", "fri")
    },
}


def seed_demo_world(svc: Services, tenant: Tenant) -> bool:
    """Two buildings, three residents, two suppliers and the settings the walk needs;
    once (``False`` when the office already has buildings: an admin may have changed them)."""
    from bot.office.buildings import import_buildings, tenant_buildings
    from bot.office.contacts_import import import_contacts

    with svc.db.read() as session:
        if tenant_buildings(session, tenant.id):
            return False
    import_buildings(svc, tenant, [dict(row) for row in DEMO_BUILDINGS])
    rows = [
        {**row, "consent_at": DEMO_CONSENT, "consent_method": "modulo firmato (demo)"}
        if row["legal_basis"] == "consent"
        else dict(row)
        for row in DEMO_PEOPLE
    ]
    import_contacts(svc, tenant, rows)
    update_settings(svc, tenant.id, DEMO_SETTINGS, actor="system:portineria-dev")
    return True


def _matches(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
