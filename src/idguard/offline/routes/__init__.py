"""Offline verification's routes: the set, its deltas and keys, offline checks (units), and the
`offline` grant (supervisors)."""
