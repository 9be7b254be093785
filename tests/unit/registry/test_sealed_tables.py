"""Which columns are sealed at rest (registry/sealed.py SEALED_TABLES): the list `idguard keys
rekey` walks must be exactly the models' sealed fields, each with its `<field>_sealed` column and
`seal_key`; a sealed row's values open only on their own row, whatever the row id's kind."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from idguard.core.sealing import KeyRing, KeyRingError, sealing_context
from idguard.registry.keys_cli import tables
from idguard.registry.sealed import SEALED_TABLES, Sealed, open_value, seal_row
from idguard.schema import Base

RING = KeyRing({"k1": b"\x01" * 32})


def _sealed_fields() -> dict[str, set[str]]:
    """table -> the fields its model declares as Sealed."""
    found: dict[str, set[str]] = {}
    for mapper in Base.registry.mappers:
        model = mapper.class_
        fields = {name for name, value in vars(model).items() if isinstance(value, Sealed)}
        if fields:
            found[str(mapper.local_table.description)] = fields
    return found


def test_the_list_rekey_walks_is_every_models_sealed_fields() -> None:
    assert {table: set(spec.fields) for table, spec in SEALED_TABLES.items()} == _sealed_fields()
    assert [t.name for t in tables()] == list(SEALED_TABLES)


@pytest.mark.parametrize("table", sorted(SEALED_TABLES))
def test_each_sealed_table_has_its_columns_and_no_clear_one(table: str) -> None:
    spec = SEALED_TABLES[table]
    columns = Base.metadata.tables[table].c
    assert "seal_key" in columns
    for field in spec.fields:
        assert isinstance(columns[spec.column(field)].type, sa.LargeBinary)
        assert field not in columns  # the clear column is gone
    row_id = columns[spec.row_id]
    assert row_id.primary_key or row_id.unique
    # The database assigns the id exactly where the table's key is an autoincrement integer.
    assert spec.db_assigned == (spec.key is int)


@given(
    st.sampled_from(sorted(SEALED_TABLES)),
    st.text(min_size=1, max_size=200),
    st.one_of(st.uuids(), st.integers(min_value=1, max_value=2**62), st.text(min_size=1, max_size=32)),
    st.one_of(st.uuids(), st.integers(min_value=1, max_value=2**62), st.text(min_size=1, max_size=32)),
)
def test_a_sealed_value_opens_on_its_own_row_only(
    table: str, text: str, row: uuid.UUID | int | str, other: uuid.UUID | int | str
) -> None:
    spec = SEALED_TABLES[table]
    field = spec.fields[-1]
    values = seal_row(RING, spec, row, {f: text if f == field else None for f in spec.fields})
    assert values["seal_key"] == "k1"
    sealed = values[spec.column(field)]
    assert open_value(RING, spec, field, row, "k1", sealed) == text
    if len(text.encode()) >= 4:
        assert text.encode() not in sealed
    if sealing_context(table, field, other) != sealing_context(table, field, row):  # another row
        with pytest.raises(KeyRingError, match="moved from another row"):
            open_value(RING, spec, field, other, "k1", sealed)
    for elsewhere in (t for t in SEALED_TABLES if t != table):  # the same id in another table
        with pytest.raises(KeyRingError):
            open_value(RING, SEALED_TABLES[elsewhere], field, row, "k1", sealed)
