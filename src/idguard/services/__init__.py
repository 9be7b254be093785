"""Use-cases. Each takes a Session and keyword-only arguments, enforces the rules, appends ledger
events and only flushes; the caller (API request or CLI command) commits once.

Locking rule: every change to a person's cards first locks that person's row (SELECT ... FOR
UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), then re-reads the
cards. Two clerks on one person therefore queue, and the second sees the first's result.
"""
