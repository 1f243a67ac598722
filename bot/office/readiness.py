"""Whether an office is ready to be live: what its bot cannot do without.

"Live" means the bot welcomes new residents in the office's name. The welcome states
the rules of use and names the office's proper channel for documents (the guidance
asks for it); without one it could only say something vague. So an office with no
proper channel is not live: the console shows every operator a banner that cannot be
dismissed, and the admin the setting that fixes it. The demo office of
``portineria dev`` has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Missing:
    """One thing the office must set before going live, in Italian, with its setting."""

    setting: str
    text: str


def missing_for_live(settings: dict[str, Any] | None) -> list[Missing]:
    """What the office still lacks to be live (nothing: it is live)."""
    stored = settings or {}
    missing = []
    if not str(stored.get("proper_channel") or "").strip():
        missing.append(
            Missing(
                "proper_channel",
                "Il bot non è attivo: manca il canale ufficiale per i documenti "
                "(email o PEC dello studio), che il messaggio di benvenuto deve indicare.",
            )
        )
    return missing


def is_live(settings: dict[str, Any] | None) -> bool:
    return not missing_for_live(settings)
