"""The office (tenant) and its people: routing numbers to offices, the office's
lifecycle and settings, console accounts and API tokens, contacts import, phone numbers."""
