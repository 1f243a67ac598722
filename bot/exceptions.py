"""What the console's rules say when they will not do something.

``Refused.message`` is Italian and meant for the operator's screen; ``NotFound`` is
raised alike for ids that do not exist and for another office's ids, so the views
answer 404 for both and nothing leaks across tenants.
"""

from __future__ import annotations


class NotFound(LookupError):
    """No such conversation, ticket or user in the operator's own office."""


class Refused(Exception):
    """The move is not allowed now; ``message`` tells the operator why, in Italian."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
