"""The citizens' routes: accounts, the own view (/me), public declarations, travel certificates."""
