"""Reports: charts an office manager reads at a glance, over a date range, with CSV.

The numbers come from :mod:`bot.office.reports` (aggregated in SQL); the charts are
SVG drawn on the server by pygal, without its JavaScript, and shown as images
(``data:`` URLs, which the content security policy allows for images): nothing runs
in the page. Each chart is followed by its table, for screen readers and for
reading exact values.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from types import ModuleType
from typing import Any

from flask import render_template, request
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, csv_download
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.labels import INTENT, OFFICE_ZONE, TICKET_KIND, duration, label, local_time
from bot.office import reports
from bot.privacy.audit import record_actor_audit
from bot.services import services
from storage.models import utcnow


@cache
def _pygal() -> ModuleType:
    """pygal, imported when a chart is first drawn (web processes that never draw one
    never load it), without the import hook it installs for its map plugins.

    That hook (``pygal.PluginImportFixer`` on ``sys.meta_path``) implements only the
    legacy ``find_module``, so every later failed import in the process raises an
    ImportWarning on Python 3.11; we draw no maps and take it off again.
    """
    import pygal

    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]
    return pygal


@cache
def _style() -> Any:
    _pygal()  # first: the hook comes off before anything else is imported
    from pygal.style import Style

    return Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#1d2330",
        foreground_strong="#1d2330",
        foreground_subtle="#8a90a0",
        font_family="system-ui, sans-serif",
        no_data_font_size=18,
        colors=(
            "#1f5fbf",
            "#c62828",
            "#2e7d32",
            "#f9a825",
            "#6a1b9a",
            "#00838f",
            "#ef6c00",
            "#5d4037",
            "#455a64",
            "#ad1457",
            "#7cb342",
        ),
    )


NO_DATA = "Nessun dato nel periodo"


@dataclass(frozen=True)
class Range:
    period: reports.Period
    problems: list[str]

    @property
    def args(self) -> dict[str, str]:
        return {"dal": self.period.first.isoformat(), "al": self.period.last.isoformat()}


def parse_range(args: dict[str, str], today: date) -> Range:
    """The range asked for, or the last twelve weeks; never more than two years."""
    default = reports.default_period(today)
    problems: list[str] = []
    try:
        first = date.fromisoformat(args["dal"]) if args.get("dal") else default.first
        last = date.fromisoformat(args["al"]) if args.get("al") else today
    except ValueError:
        return Range(default, ["Date non valide (AAAA-MM-GG): mostro le ultime 12 settimane."])
    if last < first:
        first, last = last, first
    if (last - first).days > reports.MAX_DAYS:
        first = last - timedelta(days=reports.MAX_DAYS)
        problems.append("Il periodo è limitato a due anni: mostro gli ultimi due.")
    return Range(reports.Period(first, last), problems)


def _image(chart: Any) -> str:
    svg = chart.render(is_unicode=True)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _config(**extra: Any) -> dict[str, Any]:
    return {
        "style": _style(),
        "js": [],  # no script: the page's policy would refuse it anyway
        "width": 800,
        "height": 360,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 3,
        "no_data_text": NO_DATA,
        "truncate_legend": 30,
        "disable_xml_declaration": True,
        **extra,
    }


def _weeks_chart(weeks: list[date], counts: list[reports.WeekIntent]) -> str:
    chart = _pygal().StackedBar(**_config(x_label_rotation=30, y_title="messaggi"))
    chart.x_labels = [w.strftime("%d/%m") for w in weeks]
    for intent in sorted({c.intent or "" for c in counts}):
        by_week = {c.week: c.count for c in counts if (c.intent or "") == intent}
        chart.add(_intent(intent or None), [by_week.get(w, 0) for w in weeks])
    return _image(chart)


def _intent(value: str | None) -> str:
    return label(INTENT, value, "parole chiave e consenso")


def _operators_chart(times: list[reports.OperatorTimes]) -> str:
    chart = _pygal().HorizontalBar(
        **_config(
            x_title="minuti (mediana)",
            value_formatter=lambda v: f"{v:.0f} min",
            height=max(260, 120 + 60 * len(times)),
        )
    )
    chart.x_labels = [t.email for t in times]
    chart.add("prima risposta", [_minutes(t.median_first_response_s) for t in times])
    chart.add("risoluzione", [_minutes(t.median_resolution_s) for t in times])
    return _image(chart)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _places_chart(places: list[reports.PlaceEmergencies]) -> str:
    chart = _pygal().Bar(**_config(y_title="emergenze", x_label_rotation=20))
    chart.x_labels = [p.place for p in places[:15]]
    chart.add("emergenze", [p.count for p in places[:15]])
    chart.add("confermate", [p.acknowledged for p in places[:15]])
    return _image(chart)


def _share_chart(share: reports.BotShare) -> str:
    chart = _pygal().Pie(**_config(inner_radius=0.45, height=300))
    if share.conversations:
        chart.add("solo il bot", share.bot_only)
        chart.add("con un operatore", share.conversations - share.bot_only)
    return _image(chart)


def _ages_chart(ages: list[reports.AgeCount]) -> str:
    chart = _pygal().StackedBar(**_config(y_title="ticket aperti"))
    buckets = [name for _, name in reports.AGE_BUCKETS]
    chart.x_labels = buckets
    for kind in sorted({a.kind for a in ages}):
        counts = {a.bucket: a.count for a in ages if a.kind == kind}
        chart.add(label(TICKET_KIND, kind), [counts.get(b, 0) for b in buckets])
    return _image(chart)


def _figures(wanted: Range) -> dict[str, Any]:
    period = wanted.period
    with services().db.read() as db:
        tenant_id = actor().tenant_id
        counts = reports.messages_by_week(db, tenant_id, period)
        times = reports.operator_times(db, tenant_id, period)
        found = reports.emergencies(db, tenant_id, period)
        share = reports.bot_share(db, tenant_id, period)
        ages = reports.open_tickets_by_age(db, tenant_id, utcnow())
    return {
        "weeks": period.weeks(),
        "counts": counts,
        "times": times,
        "emergencies": found,
        "places": reports.emergencies_by_place(found),
        "share": share,
        "ages": ages,
    }


@bp.get("/admin/reports")
@admin_required
def admin_reports() -> str:
    wanted = parse_range(dict(request.args), utcnow().astimezone(OFFICE_ZONE).date())
    figures = _figures(wanted)
    with services().db.session() as db:
        record_actor_audit(db, actor(), "reports.view", detail=wanted.args)
    charts = {
        "weeks": _weeks_chart(figures["weeks"], figures["counts"]),
        "operators": _operators_chart(figures["times"]),
        "places": _places_chart(figures["places"]),
        "share": _share_chart(figures["share"]),
        "ages": _ages_chart(figures["ages"]),
    }
    week_table = _week_table(figures["weeks"], figures["counts"])
    return render_template(
        "console/admin/reports.html",
        wanted=wanted,
        charts=charts,
        week_table=week_table,
        **figures,
    )


def _week_table(
    weeks: list[date], counts: list[reports.WeekIntent]
) -> tuple[list[str], list[tuple[str, list[int]]]]:
    intents = sorted({c.intent or "" for c in counts})
    table = []
    for week in weeks:
        by_intent = {(c.intent or ""): c.count for c in counts if c.week == week}
        table.append((week.strftime("%d/%m/%Y"), [by_intent.get(i, 0) for i in intents]))
    return [_intent(i or None) for i in intents], table


# -- CSV --------------------------------------------------------------------------------

CsvRows = tuple[list[str], Iterable[Iterable[Any]]]


def _csv_weeks(f: dict[str, Any]) -> CsvRows:
    return ["settimana dal", "intento", "messaggi"], (
        [c.week.isoformat(), _intent(c.intent), c.count] for c in f["counts"]
    )


def _csv_operators(f: dict[str, Any]) -> CsvRows:
    header = [
        "operatore",
        "conversazioni risposte",
        "prima risposta mediana (s)",
        "prima risposta",
        "ticket completati",
        "risoluzione mediana (s)",
        "risoluzione",
    ]
    return header, (
        [
            t.email,
            t.answered,
            _round(t.median_first_response_s),
            duration(t.median_first_response_s),
            t.resolved,
            _round(t.median_resolution_s),
            duration(t.median_resolution_s),
        ]
        for t in f["times"]
    )


def _csv_emergencies(f: dict[str, Any]) -> CsvRows:
    header = ["ticket", "conversazione", "luogo", "aperta", "confermata", "secondi alla conferma"]
    return header, (
        [
            e.ticket_id,
            e.conversation_id,
            e.place,
            local_time(e.opened_at),
            local_time(e.acknowledged_at),
            _round(e.seconds_to_ack),
        ]
        for e in f["emergencies"]
    )


def _csv_share(f: dict[str, Any]) -> CsvRows:
    share: reports.BotShare = f["share"]
    return ["conversazioni", "solo il bot", "quota"], [
        [share.conversations, share.bot_only, _round(share.share, 3)]
    ]


def _csv_ages(f: dict[str, Any]) -> CsvRows:
    return ["età", "tipo", "ticket aperti"], (
        [a.bucket, label(TICKET_KIND, a.kind), a.count] for a in f["ages"]
    )


def _round(value: float | None, digits: int = 0) -> float | int | None:
    if value is None:
        return None
    return round(value, digits) if digits else int(round(value))


CSV_REPORTS: dict[str, tuple[str, Callable[[dict[str, Any]], CsvRows]]] = {
    "settimane": ("messaggi-per-settimana", _csv_weeks),
    "operatori": ("tempi-operatori", _csv_operators),
    "emergenze": ("emergenze", _csv_emergencies),
    "bot": ("gestite-dal-bot", _csv_share),
    "ticket": ("ticket-aperti-per-eta", _csv_ages),
}


@bp.get("/admin/reports.csv")
@admin_required
def admin_reports_csv() -> Response:
    wanted = parse_range(dict(request.args), utcnow().astimezone(OFFICE_ZONE).date())
    name = request.args.get("rapporto", "settimane")
    file_name, rows_of = CSV_REPORTS.get(name, CSV_REPORTS["settimane"])
    header, rows = rows_of(_figures(wanted))
    with services().db.session() as db:
        record_actor_audit(
            db, actor(), "reports.export", detail={"report": file_name, **wanted.args}
        )
    return csv_download(f"{file_name}-{wanted.args['dal']}-{wanted.args['al']}.csv", header, rows)
