"""Downloading the media a WhatsApp message carries, within limits."""

from __future__ import annotations

from dataclasses import dataclass

import requests


class MediaRefused(Exception):
    """The media was not kept; ``reason`` is a short code for the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DownloadedMedia:
    content: bytes
    content_type: str


def download_media(
    url: str,
    *,
    auth: tuple[str, str] | None,
    max_bytes: int,
    allowed_types: frozenset[str],
    timeout: float = 20.0,
) -> DownloadedMedia:
    """Fetch one media URL with the account's credentials.

    The size limit is enforced while streaming, so a lying Content-Length cannot
    make us hold more than ``max_bytes``.
    """
    try:
        response = requests.get(url, auth=auth, stream=True, timeout=timeout)
    except requests.RequestException as error:
        raise MediaRefused("download_failed") from error
    with response:
        if response.status_code != 200:
            raise MediaRefused(f"http_{response.status_code}")
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in allowed_types:
            raise MediaRefused("type_not_allowed")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise MediaRefused("too_large")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise MediaRefused("too_large")
            chunks.append(chunk)
    return DownloadedMedia(content=b"".join(chunks), content_type=content_type)
