"""The baseline for the webhook benchmark: a Flask endpoint that validates Twilio's
signature and answers empty TwiML, storing and enqueuing nothing."""

from __future__ import annotations

import os

from flask import Flask, Response, abort, request
from twilio.request_validator import RequestValidator

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_bare_app() -> Flask:
    app = Flask(__name__)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    public = os.environ["PUBLIC_BASE_URL"].rstrip("/")

    @app.post("/webhooks/twilio/messages")
    def bare() -> Response:
        url = public + request.path
        if not validator.validate(
            url, request.form.to_dict(), request.headers.get("X-Twilio-Signature", "")
        ):
            abort(403)
        return Response(EMPTY_TWIML, mimetype="text/xml")

    return app
