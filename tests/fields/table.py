"""What every field type's test module checks, given its tables: the columns it
declares, what valid JSON values clean to, the error each invalid value gets,
and that a cleaned value stored in a real table comes back as the JSON expected."""

import peewee
import pytest

from promptproxy.data import crypto
from promptproxy.data.collection import Collection
from promptproxy.data.fields import Invalid


@pytest.fixture
def keys():
    """Encryption and digest keys of their own, the module's previous ones restored after."""
    before = crypto._fernet, crypto._digest_key
    crypto.init(crypto.new_key(), "a server secret for field tests")
    yield
    crypto._fernet, crypto._digest_key = before


def column_types(field):
    return {name: type(column) for name, column in field.columns().items()}


def refusal(field, value):
    with pytest.raises(Invalid) as refused:
        field.clean(value)
    return refused.value.code, refused.value.message


def round_trip(field, value):
    """Clean `value`, store it in a real SQLite table, read the row back and
    return the field's part of the record's JSON."""
    collection = Collection("field_test", field)
    database = peewee.SqliteDatabase(":memory:")
    with database.bind_ctx([collection.model]):
        database.create_tables([collection.model])
        row = collection.model.create(**field.store(field.clean(value)))
        return field.json_items(collection.model.get_by_id(row.id))
