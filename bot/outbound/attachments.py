"""An operator's attachment: checked, stored encrypted, and lent to Twilio.

Twilio sends media by fetching a public URL (``MediaUrl``). Ours is an address of the
app signed with its secret key and valid for ``ATTACHMENT_URL_SECONDS``: it names one
stored media item and nothing else, and once it expires the file is no longer
reachable from outside. The file stays encrypted at rest like every inbound medium
(and goes with the message under retention and erasure).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.exceptions import NotFound, Refused
from storage.files import private_folder, write_private
from storage.models import MediaItem, Message
from storage.vocabulary import Direction

if TYPE_CHECKING:
    from bot.services import Services

# What an operator may attach, recognised by its first bytes rather than by the
# name or type the browser claims: photos and PDF documents.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "application/pdf": (b"%PDF-",),
}
_SALT = "portineria.outbound-media"


@dataclass(frozen=True)
class Attachment:
    content: bytes
    content_type: str


def read_attachment(content: bytes, max_bytes: int) -> Attachment:
    """The upload as an :class:`Attachment`, or a Refused in Italian."""
    if not content:
        raise Refused("Il file allegato è vuoto.")
    if len(content) > max_bytes:
        mib = 1024 * 1024
        limit = f"{max_bytes // mib} MB" if max_bytes >= mib else f"{max_bytes // 1024} KB"
        raise Refused(f"L'allegato è troppo grande (al massimo {limit}).")
    for content_type, prefixes in SIGNATURES.items():
        if content.startswith(prefixes):
            return Attachment(content, content_type)
    raise Refused("Si possono allegare solo foto (JPEG, PNG) e documenti PDF.")


def store_attachment(
    svc: Services, session: Session, message: Message, attachment: Attachment
) -> MediaItem:
    """Write the file (encrypted) and its media row for an outbound message."""
    digest = hashlib.sha256(attachment.content).hexdigest()
    folder = private_folder(Path(svc.config["MEDIA_ROOT"]) / str(message.tenant_id))
    path = folder / f"{message.id}-0-{digest[:16]}.bin"
    write_private(path, svc.cipher.encrypt_bytes(attachment.content))
    item = MediaItem(
        tenant_id=message.tenant_id,
        message_id=message.id,
        position=0,
        content_type=attachment.content_type,
        size=len(attachment.content),
        sha256=digest,
        path=str(path),
    )
    session.add(item)
    return item


def _serializer(svc: Services) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(svc.config["SECRET_KEY"]), salt=_SALT)


def media_urls(svc: Services, session: Session, message_id: int) -> tuple[str, ...]:
    """The signed addresses of an outbound message's attachments, for ``MediaUrl``."""
    ids = session.scalars(
        select(MediaItem.id)
        .join(Message, Message.id == MediaItem.message_id)
        .where(
            MediaItem.message_id == message_id,
            Message.direction == Direction.OUT,
            MediaItem.path.is_not(None),
        )
        .order_by(MediaItem.position)
    )
    base = str(svc.config["PUBLIC_BASE_URL"]).rstrip("/")
    return tuple(f"{base}/media/{_serializer(svc).dumps(media_id)}" for media_id in ids)


def open_signed(svc: Services, token: str) -> tuple[bytes, str]:
    """The attachment a signed address names, while it is valid: ``(bytes, type)``."""
    try:
        media_id = _serializer(svc).loads(token, max_age=int(svc.config["ATTACHMENT_URL_SECONDS"]))
    except BadSignature as error:  # expired ones too (SignatureExpired is one)
        raise NotFound("media") from error
    with svc.db.read() as session:
        item = session.get(MediaItem, int(media_id))
        outbound = item is not None and (
            session.scalar(select(Message.direction).where(Message.id == item.message_id))
            == Direction.OUT
        )
        if item is None or not outbound or not item.path:
            raise NotFound("media")
        path, content_type = item.path, item.content_type
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as error:  # erased or purged since
        raise NotFound("media") from error
    return svc.cipher.decrypt_bytes(data), content_type
