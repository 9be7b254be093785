"""Scale-out on NATS JetStream (issue 15): the ledger relay, verifier nodes without a database,
the durable check stream and its sink into PostgreSQL."""
