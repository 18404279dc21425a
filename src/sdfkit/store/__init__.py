"""The corpus store: the DuckDB catalog, its schema, SQL access, ingest, repair."""
