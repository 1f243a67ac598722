"""The conversation: what an inbound message means and what the bot does about it.

``rules.plan_turn`` decides (a pure function), ``engine.process_inbound`` carries the
plan out, ``handoff`` moves a conversation between the bot and the office's people.
"""
