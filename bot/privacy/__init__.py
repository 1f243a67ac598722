"""Privacy by construction: consent and its ledger, data-subject rights, retention,
the art. 30 register and the hash-chained audit trail."""
