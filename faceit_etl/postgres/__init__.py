"""The PostgreSQL target: DDL, the COPY-and-upsert load, verification, and the run log."""
