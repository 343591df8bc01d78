"""Trigram indexes for the admin's message search (any part of a number, words of a body),
on PostgreSQL only: pg_trgm is a trusted extension (PostgreSQL 13+), so the database owner
may create it. SQLite scans, which the embedded default's sizes allow."""

from django.db import migrations

CREATE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS message_phone_trgm_idx "
    "ON messaging_message USING gin (phone gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS message_body_trgm_idx "
    "ON messaging_message USING gin (upper(body) gin_trgm_ops)",
]
DROP = [
    "DROP INDEX IF EXISTS message_body_trgm_idx",
    "DROP INDEX IF EXISTS message_phone_trgm_idx",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("messaging", "0014_pool_revocation")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
