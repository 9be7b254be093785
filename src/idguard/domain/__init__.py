"""Plain-Python domain rules: id numbers, card statuses, validity periods, lifecycle decisions.

Nothing in this package imports SQLAlchemy or FastAPI; the services apply these rules to rows.
"""
