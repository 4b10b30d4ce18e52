"""The Dataverse tables the adapter syncs, declared as data.

Entity set names, primary id columns and column names are the tables' Web API names
(Dataverse table/entity reference: ``reference/entities/account.md``, ``contact.md``,
``opportunity.md``). Each column carries its type so pull filters render as correctly typed
OData literals; ``read_only`` columns are never written; the lookup ``_x_value`` columns are
read-only projections (writing a lookup needs ``x@odata.bind``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal[
    "guid", "string", "memo", "int", "decimal", "money", "bool", "datetime", "date"
]
Direction = Literal["bidirectional", "inbound"]

# Every table has these; ``modifiedon`` is the incremental high-water mark.
SYSTEM_COLUMNS: dict[str, ColumnType] = {
    "createdon": "datetime",
    "modifiedon": "datetime",
}

# Custom columns carry the publisher's customization prefix (``new_``, ``cr8a1_``...).
CUSTOM_COLUMN = re.compile(r"[a-z][a-z0-9]{1,7}_[a-z0-9_]{1,100}")


@dataclass(frozen=True)
class EntitySpec:
    """One synced table: logical name, entity set, primary id column, columns, direction."""

    name: str
    entity_set: str
    primary_id: str
    shard_type: str
    direction: Direction
    columns: dict[str, ColumnType]
    read_only: frozenset[str] = field(default_factory=frozenset)

    @property
    def all_columns(self) -> dict[str, ColumnType]:
        return {self.primary_id: "guid", **self.columns, **SYSTEM_COLUMNS}

    @property
    def writable(self) -> bool:
        return self.direction == "bidirectional"

    def column_type(self, name: str) -> ColumnType | None:
        return self.all_columns.get(name)

    def writable_columns(self) -> set[str]:
        return {
            name for name in self.columns if name not in self.read_only and not name.startswith("_")
        }

    def select(self) -> list[str]:
        """The ``$select`` list: the declared columns, the id and ``modifiedon``."""
        return list(self.all_columns)


ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec(
            name="account",
            entity_set="accounts",
            primary_id="accountid",
            shard_type="c_company",
            direction="bidirectional",
            columns={
                "name": "string",
                "accountnumber": "string",
                "websiteurl": "string",
                "telephone1": "string",
                "emailaddress1": "string",
                "address1_city": "string",
                "address1_country": "string",
                "numberofemployees": "int",
                "revenue": "money",
                "description": "memo",
            },
        ),
        EntitySpec(
            name="contact",
            entity_set="contacts",
            primary_id="contactid",
            shard_type="c_contact",
            direction="bidirectional",
            columns={
                "firstname": "string",
                "lastname": "string",
                "fullname": "string",
                "emailaddress1": "string",
                "telephone1": "string",
                "jobtitle": "string",
                "_parentcustomerid_value": "guid",
            },
            read_only=frozenset({"fullname", "_parentcustomerid_value"}),
        ),
        EntitySpec(
            name="opportunity",
            entity_set="opportunities",
            primary_id="opportunityid",
            shard_type="c_opportunity",
            direction="bidirectional",
            columns={
                "name": "string",
                "estimatedvalue": "money",
                "stepname": "string",
                "estimatedclosedate": "date",
                "closeprobability": "int",
                "description": "memo",
                "_parentaccountid_value": "guid",
            },
            read_only=frozenset({"_parentaccountid_value"}),
        ),
    )
}


def entity_spec(entity: str) -> EntitySpec:
    """The spec by logical name (``account``) or entity set name (``accounts``)."""
    key = entity.strip().lower()
    if key in ENTITIES:
        return ENTITIES[key]
    for spec in ENTITIES.values():
        if spec.entity_set == key:
            return spec
    raise KeyError(entity)
