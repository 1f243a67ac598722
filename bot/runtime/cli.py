"""The ``portineria`` command: a Flask CLI over the app factory."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from bot.exceptions import InvalidPhoneNumber, PortineriaError
from bot.office import phone
from bot.services import services
from storage.files import open_private_for_writing, write_private


def main() -> None:
    from bot import create_app
    from bot.runtime.logs import configure_logging

    configure_logging()
    FlaskGroup(create_app=create_app, help="Portineria: the office's WhatsApp assistant.")()


def init_app(app: Flask) -> None:
    for command in (
        db_group,
        tenant_group,
        user_group,
        token_group,
        contacts_group,
        buildings_group,
        oncall_group,
        webhooks_group,
        worker_command,
        intents_group,
        audit_group,
        export_command,
        register_command,
        erase_command,
        purge_command,
        dev_command,
    ):
        app.cli.add_command(command)


def e164(number: str) -> str:
    """An option's phone number in E.164, or a clear usage error."""
    try:
        return phone.e164(number)
    except InvalidPhoneNumber as error:
        raise click.BadParameter(str(error)) from error


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60] or "studio"


# -- db -------------------------------------------------------------------------------


@click.group("db", help="Database schema.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply migrations up to the newest.")
@with_appcontext
def db_upgrade() -> None:
    from storage.migrate import upgrade

    upgrade(services().db.engine)
    click.echo("database is up to date")


# -- tenants --------------------------------------------------------------------------


@click.group("tenant", help="Offices (tenants).")
def tenant_group() -> None:
    pass


@tenant_group.command("create", help="Create an office; prints its slug on the last line.")
@click.option("--name", required=True)
@click.option("--whatsapp", required=True, help="The office's WhatsApp Business number.")
@click.option("--slug", default=None)
@click.option("--notice-url", default=None, help="Full privacy notice URL.")
@with_appcontext
def tenant_create(name: str, whatsapp: str, slug: str | None, notice_url: str | None) -> None:
    from bot.office.lifecycle import create_tenant

    try:
        tenant = create_tenant(
            services(),
            name=name,
            whatsapp_number=e164(whatsapp),
            slug=slugify(slug or name),
            notice_url=notice_url,
        )
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"created office {tenant.name!r} for {tenant.whatsapp_number}")
    click.echo(tenant.slug)


@tenant_group.command("settings", help="Show an office's settings, or change them with --set.")
@click.option("--tenant", "slug", required=True)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="e.g. retention.messages_days=180, store_profile_name=false, dpo_contact=...",
)
@with_appcontext
def tenant_settings(slug: str, assignments: tuple[str, ...]) -> None:
    from bot.office.settings import parse_assignment, update_settings

    tenant = _tenant(slug)
    try:
        changes = dict(parse_assignment(a) for a in assignments)
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    effective = update_settings(services(), tenant.id, changes, actor="cli")
    click.echo(json.dumps(effective, indent=2, ensure_ascii=False))


@tenant_group.command(
    "terminate", help="End an office's service; its data is deleted 60 days later."
)
@click.option("--tenant", "slug", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def tenant_terminate(slug: str, yes: bool) -> None:
    from bot.office.lifecycle import terminate_tenant
    from storage.models import utcnow

    tenant = _tenant(slug)
    if not yes:
        click.confirm(f"End the service of {tenant.name!r} now?", abort=True)
    delete_after = terminate_tenant(services(), tenant.id, utcnow(), actor="cli")
    click.echo(f"office {slug!r} terminated: its number is no longer served")
    click.echo(
        f"its data can be exported until {delete_after:%Y-%m-%d %H:%M} UTC "
        f"(portineria export --tenant {slug} --out FILE); the daily purge deletes it after"
    )


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Personal data on disk: readable by its owner only, not even for a moment by all."""
    write_private(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))


def _tenant(slug: str):  # type: ignore[no-untyped-def]
    from storage.queries import tenant_by_slug

    with services().db.read() as session:
        tenant = tenant_by_slug(session, slug)
    if tenant is None:
        raise click.ClickException(f"no office with slug {slug!r}")
    return tenant


# -- users and tokens -----------------------------------------------------------------


@click.group("user", help="Console accounts.")
def user_group() -> None:
    pass


@user_group.command("create", help="Create an operator or admin of an office.")
@click.option("--tenant", "slug", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["operator", "admin"]), required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_appcontext
def user_create(slug: str, email: str, role: str, password: str) -> None:
    from bot.office.accounts import create_user

    tenant = _tenant(slug)
    try:
        with services().db.session() as session:
            user = create_user(session, tenant, email, role, password)
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"created {role} {user.email} (id {user.id})")


@click.group("token", help="API tokens.")
def token_group() -> None:
    pass


@token_group.command("create", help="Create an API token; prints it on the last line, once.")
@click.option("--tenant", "slug", required=True)
@click.option("--name", required=True)
@with_appcontext
def token_create(slug: str, name: str) -> None:
    from bot.office.tokens import create_token

    tenant = _tenant(slug)
    with services().db.session() as session:
        token = create_token(session, tenant, name)
    click.echo(f"token {name!r} for {tenant.slug}: store it now, it is not shown again")
    click.echo(token)


# -- on-call rota -----------------------------------------------------------------------


@click.group("oncall", help="The office's on-call rota for unacknowledged emergencies.")
def oncall_group() -> None:
    pass


@oncall_group.command("add", help="Put someone at the end of the rota (called in this order).")
@click.option("--tenant", "slug", required=True)
@click.option("--name", required=True)
@click.option("--phone", required=True, help="Their phone number, e.g. +393331234567.")
@with_appcontext
def oncall_add(slug: str, name: str, phone: str) -> None:
    from bot.office.oncall import add_oncall

    tenant = _tenant(slug)
    try:
        person = add_oncall(services(), tenant.id, name, e164(phone), actor="cli")
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{person.position}. {person.name} {person.phone}")


@oncall_group.command("list", help="The rota, in calling order.")
@click.option("--tenant", "slug", required=True)
@with_appcontext
def oncall_list(slug: str) -> None:
    from bot.office.oncall import list_oncall

    people = list_oncall(services(), _tenant(slug).id)
    if not people:
        click.echo("nobody is on call")
    for order, person in enumerate(people, start=1):
        click.echo(f"{order}. {person.name} {person.phone}")


@oncall_group.command("remove", help="Take someone off the rota.")
@click.option("--tenant", "slug", required=True)
@click.option("--phone", required=True)
@with_appcontext
def oncall_remove(slug: str, phone: str) -> None:
    from bot.office.oncall import remove_oncall

    tenant = _tenant(slug)
    try:
        person = remove_oncall(services(), tenant.id, e164(phone), actor="cli")
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"removed {person.name} from the rota")


# -- CRM webhooks ---------------------------------------------------------------------


@click.group("webhooks", help="Signed events pushed to the office's CRM.")
def webhooks_group() -> None:
    pass


def _iso_option(value: str | None, name: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=name) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@webhooks_group.command("add", help="Add an endpoint; prints its signing secret, once, last.")
@click.option("--tenant", "slug", required=True)
@click.option("--url", required=True, help="https://… (http only on loopback)")
@click.option("--events", default=None, help="Comma-separated event types (default: all).")
@click.option("--allow-loopback", is_flag=True, help="Accept 127.0.0.1/localhost (same host).")
@click.option("--allow-private", is_flag=True, help="Accept private/link-local addresses.")
@with_appcontext
def webhooks_add(
    slug: str, url: str, events: str | None, allow_loopback: bool, allow_private: bool
) -> None:
    from bot.crm.endpoints import By, add_endpoint

    tenant = _tenant(slug)
    try:
        made = add_endpoint(
            services(),
            tenant.id,
            url,
            events,
            allow_loopback=allow_loopback,
            allow_private=allow_private,
            by=By("cli"),
        )
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    endpoint = made.endpoint
    click.echo(f"endpoint {endpoint.id} for {slug}: {endpoint.url}")
    click.echo(f"events: {', '.join(endpoint.events) or 'all'}")
    click.echo("signing secret: store it now, it is not shown again")
    click.echo(made.secret)


@webhooks_group.command("list", help="The office's endpoints.")
@click.option("--tenant", "slug", required=True)
@with_appcontext
def webhooks_list(slug: str) -> None:
    from bot.crm.endpoints import list_endpoints
    from storage.models import iso_utc

    endpoints = list_endpoints(services(), _tenant(slug).id)
    if not endpoints:
        click.echo("no endpoints")
    for e in endpoints:
        state = "active" if e.active else f"DISABLED since {iso_utc(e.disabled_at)}"
        extra = [
            f"events: {', '.join(e.events) or 'all'}",
            f"last success: {iso_utc(e.last_success_at) or '-'}",
        ]
        if e.failing_since:
            extra.append(f"failing since {iso_utc(e.failing_since)}")
        if e.rotating_until:
            extra.append(f"previous secret valid until {iso_utc(e.rotating_until)}")
        click.echo(f"{e.id}\t{state}\t{e.url}\t" + "; ".join(extra))


@webhooks_group.command("remove", help="Remove an endpoint and its delivery log.")
@click.option("--tenant", "slug", required=True)
@click.option("--id", "endpoint_id", required=True, type=int)
@with_appcontext
def webhooks_remove(slug: str, endpoint_id: int) -> None:
    from bot.crm.endpoints import By, remove_endpoint

    try:
        removed = remove_endpoint(services(), _tenant(slug).id, endpoint_id, by=By("cli"))
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"removed endpoint {removed.id} ({removed.url})")


@webhooks_group.command(
    "rotate-secret", help="A new signing secret (last line); the old one signs too for a while."
)
@click.option("--tenant", "slug", required=True)
@click.option("--id", "endpoint_id", required=True, type=int)
@click.option(
    "--overlap-hours",
    default=24.0,
    show_default=True,
    type=float,
    help="How long deliveries carry both signatures (0: the old secret stops now).",
)
@with_appcontext
def webhooks_rotate(slug: str, endpoint_id: int, overlap_hours: float) -> None:
    from bot.crm.endpoints import By, rotate_secret

    try:
        made = rotate_secret(services(), _tenant(slug).id, endpoint_id, overlap_hours, by=By("cli"))
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    until = made.endpoint.rotating_until
    click.echo(
        f"endpoint {endpoint_id}: the previous secret stays valid until {until:%Y-%m-%d %H:%M} UTC"
        if until
        else f"endpoint {endpoint_id}: the previous secret is no longer valid"
    )
    click.echo("new signing secret: store it now, it is not shown again")
    click.echo(made.secret)


@webhooks_group.command("enable", help="Deliver again to an endpoint that was disabled.")
@click.option("--tenant", "slug", required=True)
@click.option("--id", "endpoint_id", required=True, type=int)
@with_appcontext
def webhooks_enable(slug: str, endpoint_id: int) -> None:
    from bot.crm.endpoints import By, enable_endpoint

    try:
        endpoint = enable_endpoint(services(), _tenant(slug).id, endpoint_id, by=By("cli"))
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"endpoint {endpoint.id} is active: what waited for it is delivered first")


@webhooks_group.command("replay", help="Deliver stored events again: one, or a time range.")
@click.option("--tenant", "slug", required=True)
@click.option("--event", "event_uid", default=None, help="An event id (evt_…).")
@click.option("--since", default=None, help="ISO 8601 time: the events from then on.")
@click.option("--until", default=None, help="ISO 8601 time: the events before then.")
@click.option("--id", "endpoint_id", default=None, type=int, help="Only to this endpoint.")
@with_appcontext
def webhooks_replay(
    slug: str,
    event_uid: str | None,
    since: str | None,
    until: str | None,
    endpoint_id: int | None,
) -> None:
    from bot.crm.endpoints import By
    from bot.crm.history import replay

    if (event_uid is None) == (since is None):
        raise click.UsageError("give either --event ID or --since ISO [--until ISO]")
    try:
        queued = replay(
            services(),
            _tenant(slug).id,
            by=By("cli"),
            event_uid=event_uid,
            since=_iso_option(since, "--since"),
            until=_iso_option(until, "--until"),
            endpoint_id=endpoint_id,
        )
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{queued} deliveries queued")


# -- contacts and rights --------------------------------------------------------------


@click.group("contacts", help="The office's contacts.")
def contacts_group() -> None:
    pass


def _read_rows(path: Path, read: Any) -> list[dict[str, str]]:
    try:
        return list(read(path.read_text(encoding="utf-8-sig")))
    except (PortineriaError, UnicodeDecodeError) as error:
        raise click.ClickException(f"cannot read {path}: {error}") from error


def _report(results: list[Any], who: str) -> None:
    """The per-row report of an import: one line a row, then the totals."""
    for result in results:
        line = f"riga {result.line}: {getattr(result, who) or '-'} {result.outcome}"
        click.echo(line + (f" ({result.reason})" if result.reason else ""))
    refused = sum(r.outcome == "refused" for r in results)
    click.echo(f"{len(results) - refused} imported or updated, {refused} refused")


@contacts_group.command(
    "import",
    help="Import phone,kind,legal_basis,consent_at,consent_method "
    "[,name,building,scala,interno,role,trade].",
)
@click.option("--tenant", "slug", required=True)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def contacts_import(slug: str, path: Path) -> None:
    from bot.office.contacts_import import import_contacts, read_csv

    tenant = _tenant(slug)
    _report(import_contacts(services(), tenant, _read_rows(path, read_csv)), "phone")


@click.group("buildings", help="The office's buildings (condomìni).")
def buildings_group() -> None:
    pass


@buildings_group.command("import", help="Import code,name,address [,ascensore,gas].")
@click.option("--tenant", "slug", required=True)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def buildings_import(slug: str, path: Path) -> None:
    from bot.office.buildings import import_buildings, read_buildings_csv

    tenant = _tenant(slug)
    _report(import_buildings(services(), tenant, _read_rows(path, read_buildings_csv)), "code")


@click.command(
    "export",
    help="Export an office's data, or one contact's (access, portability), as JSON Lines.",
)
@click.option("--tenant", "slug", required=True)
@click.option("--contact", "phone", default=None, help="The contact's phone number.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def export_command(slug: str, phone: str | None, out: Path) -> None:
    from bot.privacy.rights import write_export

    tenant = _tenant(slug)
    contact_id = _contact_id(tenant, phone)
    # Written as it is read, next to the target and owner-only from its first byte;
    # it takes the target's name only once complete, and a failed export leaves nothing.
    partial = out.with_name(out.name + ".partial")
    try:
        with open_private_for_writing(partial) as handle:
            summary = write_export(services(), tenant, contact_id, handle, actor="cli")
        partial.replace(out)
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    finally:
        partial.unlink(missing_ok=True)
    click.echo(
        f"exported {summary.contacts} contact(s), {summary.messages} message(s), "
        f"{summary.audit_events} audit event(s) to {out}"
    )


def _contact_id(tenant, phone: str | None) -> int | None:  # type: ignore[no-untyped-def]
    from storage.queries import contact_by_phone

    if phone is None:
        return None
    with services().db.read() as session:
        contact = contact_by_phone(session, tenant, e164(phone))
    if contact is None:
        raise click.ClickException(f"no contact with the number {phone}")
    return contact.id


@click.command("erase", help="Carry out an erasure request for one contact.")
@click.option("--tenant", "slug", required=True)
@click.option("--contact", "phone", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def erase_command(slug: str, phone: str, yes: bool) -> None:
    from bot.privacy.rights import erase_contact

    tenant = _tenant(slug)
    if not yes:
        click.confirm(f"Erase every message and record of {phone}?", abort=True)
    try:
        removed = erase_contact(services(), tenant, e164(phone), actor="cli")
    except PortineriaError as error:
        raise click.ClickException(str(error)) from error
    click.echo("erased: " + ", ".join(f"{k} {v}" for k, v in removed.items()))


@click.command("purge", help="Apply every office's retention terms now.")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@with_appcontext
def purge_command(dry_run: bool) -> None:
    from bot.privacy.retention import purge, report_lines
    from storage.models import utcnow

    reports = purge(services(), utcnow(), dry_run=dry_run)
    for line in report_lines(reports):
        click.echo(("would remove: " if dry_run else "removed: ") + line)
    for report in reports:
        if report.batches:  # a real run: how long it held the database, at most
            click.echo(
                f"{report.tenant}: {report.batches} write transactions, the longest "
                f"{report.longest_write_ms:.0f} ms, {report.seconds:.1f} s in all"
            )
    failed = [report.tenant for report in reports if report.error]
    if failed:
        raise click.ClickException("purge failed for " + ", ".join(failed) + " (see the log)")


@click.command("register", help="Export an office's register of processing (art. 30 GDPR).")
@click.option("--tenant", "slug", required=True)
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def register_command(slug: str, out: Path | None) -> None:
    from bot.privacy.register import export_register
    from storage.models import utcnow

    tenant = _tenant(slug)
    data = export_register(services(), tenant, utcnow(), actor="cli")
    if out is None:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    write_private_json(out, data)
    click.echo(f"register of {tenant.slug} ({len(data['activities'])} activities) written to {out}")


@click.group("audit", help="The audit trail.")
def audit_group() -> None:
    pass


@audit_group.command("verify", help="Check an office's audit hash chain.")
@click.option("--tenant", "slug", required=True)
@with_appcontext
def audit_verify(slug: str) -> None:
    from bot.privacy.audit import verify_chain

    tenant = _tenant(slug)
    with services().db.read() as session:
        report = verify_chain(session, tenant.id)
    for problem in report.problems:
        click.echo(f"audit event {problem.event_id}: {problem.reason}", err=True)
    if report.more_problems:
        click.echo(f"... and {report.more_problems} more problem(s)", err=True)
    if report.problems:
        total = len(report.problems) + report.more_problems
        raise click.ClickException(f"audit chain of {slug} is broken ({total} problem(s))")
    click.echo(f"audit chain of {slug} is intact ({report.checked} events)")


# -- worker ---------------------------------------------------------------------------


@click.command("worker", help="Run the RQ worker (and the sweeper) with the app's configuration.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Sender threads (default: WORKER_CONCURRENCY); 1 sends inline in the job.",
)
@with_appcontext
def worker_command(burst: bool, concurrency: int | None) -> None:
    from bot.runtime.worker import run_worker

    senders = concurrency or int(current_app.config["WORKER_CONCURRENCY"])
    run_worker(current_app, burst=burst, concurrency=senders)


# -- intents --------------------------------------------------------------------------


@click.group("intents", help="The Italian language pipeline.")
def intents_group() -> None:
    pass


@intents_group.command("train", help="Train the intent pipeline (deterministic).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None)
@click.option("--seed", default=0, show_default=True)
def intents_train(out_dir: Path | None, seed: int) -> None:
    from intents.training import train_model

    summary = train_model(out_dir=out_dir, seed=seed)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


@intents_group.command("evaluate", help="Per-intent P/R/F1, macro-F1 and confusion on FILE.jsonl.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def intents_evaluate(path: Path, as_json: bool) -> None:
    from intents.evaluation import evaluate_file, render_report

    report = evaluate_file(path)
    click.echo(
        json.dumps(report, indent=2, ensure_ascii=False) if as_json else render_report(report)
    )


# -- dev ------------------------------------------------------------------------------


@click.command("dev", help="The whole embedded stack: Redis, worker, web app, demo office.")
@click.option("--port", default=5000, show_default=True)
def dev_command(port: int) -> None:
    from bot.runtime.devstack import run_dev

    run_dev(port)
