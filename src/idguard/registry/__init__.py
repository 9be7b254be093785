"""The registry (登记): persons, cards and their ledger, loss reports, found cards, staff.

Use-cases. Each takes a Session and keyword-only arguments, enforces the rules, appends ledger
events and only flushes; the caller (API request or CLI command) commits once.

Lock hierarchy (PostgreSQL SELECT ... FOR UPDATE; SQLite's BEGIN IMMEDIATE already serialises
every writer): person → card. An operation on one card (loss report, cancel, found card, return)
locks just that card (`lookups.lock_card`). An operation on a person's set of cards (issue,
temporary card, revocation) locks the person, then all of their cards (`lock_person`,
`cards_of(lock=True)`). Locks are only ever taken downwards, so there is no deadlock cycle, and
every decision is made on rows read after their lock is held: two clerks on one person queue, and
the second sees the first's result.
"""
