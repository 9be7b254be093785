"""The HTTP routes of the registry: staff tokens, persons, cards, loss reports, found cards, the
fingerprint comparison log."""
