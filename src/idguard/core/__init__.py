"""Pure building blocks every feature shares: time, errors, who may do what, id numbers, rate
limits. Nothing here imports SQLAlchemy or FastAPI."""
