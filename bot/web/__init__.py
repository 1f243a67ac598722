"""The HTTP edges: Twilio's webhooks, the JSON API, health probes, the public notice
page, the console's real-time channel and the dev simulator.

Each view parses its input, calls one function of the core and shapes the answer;
no business rule lives here.
"""
