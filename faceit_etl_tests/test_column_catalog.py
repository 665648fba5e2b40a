"""One column catalog: the fields' names, kinds and sizes in `validation/fields.py` make the mapped
frames' columns and the tables our DDL creates; nothing else spells them."""

from __future__ import annotations

import re
from pathlib import Path

from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS
from faceit_etl.postgres import ddl
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, USER_FIELDS, Kind

PACKAGE = Path(__file__).resolve().parent.parent / "faceit_etl"
TYPES = {
    Kind.TELEGRAM_ID: "bigint",
    Kind.COUNT: "integer",
    Kind.FLAG: "boolean",
    Kind.TIMESTAMP: "timestamp with time zone",
    Kind.TIER: "subscriptiontier",
}


def test_no_module_but_the_catalog_spells_a_fields_size_or_the_column_list():
    names = "|".join(f.name for f in (*USER_FIELDS, *SUBSCRIPTION_FIELDS))
    spelled = re.compile(
        rf"\b(?:{names})\s+(?:varchar|character varying)\(\d+\)"  # a column definition with its size
        r"|[\"']faceit_player_id[\"'],\s*[\"']faceit_nickname[\"']"  # a hand-written list of the columns
        r"|[\"']expires_at[\"'],\s*[\"']auto_renew[\"']"
    )
    found = [
        f"{path.relative_to(PACKAGE)}: {match.group()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "fields.py"
        for match in spelled.finditer(path.read_text())
    ]
    assert found == []


def test_the_frames_columns_are_the_catalogs_fields_after_the_row_ids():
    assert USER_COLUMNS == ["id", *(f.name for f in USER_FIELDS)]
    assert SUBSCRIPTION_COLUMNS == ["id", "user_id", *(f.name for f in SUBSCRIPTION_FIELDS)]


def test_the_created_tables_have_each_fields_type_and_size_from_the_catalog(db):
    ddl.ensure_target_tables(db, "public")
    for table, fields in ((ddl.USERS, USER_FIELDS), (ddl.SUBSCRIPTIONS, SUBSCRIPTION_FIELDS)):
        created = {column: data_type for column, data_type, _ in ddl.column_types(db, "public", table)}
        expected = {
            f.name: f"character varying({f.max_length})" if f.kind is Kind.TEXT else TYPES[f.kind] for f in fields
        }
        assert {name: created[name] for name in expected} == expected
    bare = ddl.target_tables_sql(keys=False)
    assert "PRIMARY KEY" not in bare and "UNIQUE" not in bare and "REFERENCES" not in bare and "INDEX" not in bare
    assert ddl.target_tables_sql().replace(" PRIMARY KEY", "").replace(" UNIQUE", "").count("varchar") == bare.count("varchar")
