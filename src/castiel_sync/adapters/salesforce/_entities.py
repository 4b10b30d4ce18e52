"""The Salesforce objects the adapter syncs, declared as data.

Field names are the objects' standard API names (Salesforce Object Reference); each field
carries its SOAP/REST type so pull filters are rendered as correctly typed SOQL literals.
``filterable`` is the allow-list a tenant's ``FilterCondition.field`` is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal[
    "id",
    "reference",
    "string",
    "textarea",
    "picklist",
    "email",
    "phone",
    "url",
    "int",
    "double",
    "currency",
    "percent",
    "boolean",
    "date",
    "datetime",
]

Direction = Literal["bidirectional", "inbound"]

# Read-only system fields on every object (https://developer.salesforce.com/docs/
# atlas.en-us.api.meta/api/system_fields.htm). SystemModstamp changes on every write by a
# user or an automated process, so it is the replication cursor (sObject Get Updated uses it).
SYSTEM_FIELDS: dict[str, FieldType] = {
    "Id": "id",
    "IsDeleted": "boolean",
    "CreatedDate": "datetime",
    "LastModifiedDate": "datetime",
    "SystemModstamp": "datetime",
}


@dataclass(frozen=True)
class EntitySpec:
    """One synced object: its SOQL name, fields (name -> type) and sync direction."""

    name: str
    sobject: str
    shard_type: str
    direction: Direction
    fields: dict[str, FieldType]
    read_only: frozenset[str] = field(default_factory=frozenset)

    @property
    def all_fields(self) -> dict[str, FieldType]:
        return {**SYSTEM_FIELDS, **self.fields}

    @property
    def writable(self) -> bool:
        return self.direction == "bidirectional"

    def canonical(self, name: str) -> str | None:
        """The declared spelling of ``name`` (SOQL field names are case-insensitive)."""
        lowered = name.lower()
        for candidate in self.all_fields:
            if candidate.lower() == lowered:
                return candidate
        return None

    def writable_fields(self) -> frozenset[str]:
        return frozenset(self.fields) - self.read_only


_OWNER: dict[str, FieldType] = {"OwnerId": "reference"}

ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec(
            name="Account",
            sobject="Account",
            shard_type="c_company",
            direction="bidirectional",
            fields={
                "Name": "string",
                "Type": "picklist",
                "Industry": "picklist",
                "Website": "url",
                "Phone": "phone",
                "Description": "textarea",
                "NumberOfEmployees": "int",
                "AnnualRevenue": "currency",
                "BillingStreet": "textarea",
                "BillingCity": "string",
                "BillingState": "string",
                "BillingPostalCode": "string",
                "BillingCountry": "string",
                "ParentId": "reference",
                **_OWNER,
            },
        ),
        EntitySpec(
            name="Contact",
            sobject="Contact",
            shard_type="c_contact",
            direction="bidirectional",
            fields={
                "AccountId": "reference",
                "FirstName": "string",
                "LastName": "string",
                "Email": "email",
                "Phone": "phone",
                "MobilePhone": "phone",
                "Title": "string",
                "Department": "string",
                "Description": "textarea",
                "MailingStreet": "textarea",
                "MailingCity": "string",
                "MailingState": "string",
                "MailingPostalCode": "string",
                "MailingCountry": "string",
                **_OWNER,
            },
        ),
        EntitySpec(
            name="Opportunity",
            sobject="Opportunity",
            shard_type="c_opportunity",
            direction="bidirectional",
            fields={
                "AccountId": "reference",
                "Name": "string",
                "StageName": "picklist",
                "Amount": "currency",
                "CloseDate": "date",
                "Probability": "percent",
                "Type": "picklist",
                "LeadSource": "picklist",
                "NextStep": "string",
                "Description": "textarea",
                "IsClosed": "boolean",
                "IsWon": "boolean",
                **_OWNER,
            },
            # Derived from StageName by Salesforce.
            read_only=frozenset({"IsClosed", "IsWon"}),
        ),
        EntitySpec(
            name="Task",
            sobject="Task",
            shard_type="c_note",
            direction="inbound",
            fields={
                "Subject": "string",
                "Status": "picklist",
                "Priority": "picklist",
                "ActivityDate": "date",
                "Description": "textarea",
                "WhoId": "reference",
                "WhatId": "reference",
                "IsClosed": "boolean",
                **_OWNER,
            },
        ),
        EntitySpec(
            name="Event",
            sobject="Event",
            shard_type="c_note",
            direction="inbound",
            fields={
                "Subject": "string",
                "StartDateTime": "datetime",
                "EndDateTime": "datetime",
                "DurationInMinutes": "int",
                "IsAllDayEvent": "boolean",
                "Location": "string",
                "Description": "textarea",
                "WhoId": "reference",
                "WhatId": "reference",
                **_OWNER,
            },
        ),
    )
}


def entity_spec(entity: str) -> EntitySpec:
    """The spec for ``entity`` (exact or case-insensitive name); KeyError when unknown."""
    if entity in ENTITIES:
        return ENTITIES[entity]
    for name, spec in ENTITIES.items():
        if name.lower() == entity.lower():
            return spec
    raise KeyError(entity)


def entity_for_sobject(sobject: str) -> EntitySpec | None:
    for spec in ENTITIES.values():
        if spec.sobject.lower() == sobject.lower():
            return spec
    return None
