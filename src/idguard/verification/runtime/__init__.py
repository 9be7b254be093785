"""What runs beside the requests in every server worker: the ledger follower that keeps the
index current, the key ring, the check-log writer and the webhook dispatcher."""
