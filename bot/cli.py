"""The ``portineria`` command: a Flask CLI over the app factory."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import click
import phonenumbers
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from bot.services import services


def main() -> None:
    from bot import create_app

    FlaskGroup(create_app=create_app, help="Portineria: the office's WhatsApp assistant.")()


def init_app(app: Flask) -> None:
    for command in (db_group, tenant_group, worker_command, intents_group, dev_command):
        app.cli.add_command(command)


def e164(number: str) -> str:
    """Parse an Italian or international number to E.164, or fail with a clear message."""
    try:
        parsed = phonenumbers.parse(number.removeprefix("whatsapp:"), "IT")
    except phonenumbers.NumberParseException as error:
        raise click.BadParameter(f"not a phone number: {number}") from error
    if not phonenumbers.is_valid_number(parsed):
        raise click.BadParameter(f"not a valid phone number: {number}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


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
    from bot.tenant_admin import TenantExists, create_tenant

    try:
        tenant = create_tenant(services(), name=name, whatsapp_number=e164(whatsapp),
                               slug=slugify(slug or name), notice_url=notice_url)
    except TenantExists as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"created office {tenant.name!r} for {tenant.whatsapp_number}")
    click.echo(tenant.slug)


# -- worker ---------------------------------------------------------------------------

@click.command("worker", help="Run the RQ worker (and the sweeper) with the app's configuration.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@with_appcontext
def worker_command(burst: bool) -> None:
    from bot.worker import run_worker

    run_worker(current_app, burst=burst)


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
    click.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else render_report(report))


# -- dev ------------------------------------------------------------------------------

@click.command("dev", help="The whole embedded stack: Redis, worker, web app, demo office.")
@click.option("--port", default=5000, show_default=True)
def dev_command(port: int) -> None:
    from bot.devstack import run_dev

    run_dev(port)
