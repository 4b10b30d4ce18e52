"""The HubSpot CRM objects the adapter syncs, as data (kept in step with the catalog entry
``hubspot`` in ``catalog/providers.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from castiel_sync.sdk import NotSupportedError


@dataclass(frozen=True)
class EntitySpec:
    name: str  # the path segment of /crm/v3/objects/{name}, and the sync entity name
    webhook_object: str  # the prefix of webhook subscriptionTypes ("contact.creation")
    # The "last modified" property. The search docs list ``lastmodifieddate`` among the
    # contacts' default properties and ``hs_lastmodifieddate`` for companies and deals
    # (developers.hubspot.com/docs/api-reference/.../crm/search-the-crm).
    modified_property: str
    properties: tuple[str, ...]  # requested on every read
    bidirectional: bool = True


# HubSpot returns these for every object whether requested or not.
ID_PROPERTY = "hs_object_id"
CREATED_PROPERTY = "createdate"

ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec(
            "companies",
            "company",
            "hs_lastmodifieddate",
            (
                "name",
                "domain",
                "website",
                "industry",
                "phone",
                "city",
                "country",
                "numberofemployees",
            ),
        ),
        EntitySpec(
            "contacts",
            "contact",
            "lastmodifieddate",
            ("firstname", "lastname", "email", "phone", "jobtitle"),
        ),
        EntitySpec(
            "deals",
            "deal",
            "hs_lastmodifieddate",
            ("dealname", "amount", "dealstage", "closedate", "pipeline"),
        ),
    )
}

_BY_WEBHOOK_OBJECT = {spec.webhook_object: spec for spec in ENTITIES.values()}


def entity_spec(entity: str) -> EntitySpec:
    try:
        return ENTITIES[entity]
    except KeyError:
        raise NotSupportedError(f"HubSpot has no synced entity {entity!r}") from None


def entity_for_webhook_object(name: str) -> EntitySpec | None:
    return _BY_WEBHOOK_OBJECT.get(name)


def requested_properties(spec: EntitySpec, fields: list[str] | None = None) -> list[str]:
    """The properties to ask for: the entity's defaults plus any the caller names."""
    names = list(spec.properties)
    for name in (spec.modified_property, CREATED_PROPERTY, *(fields or [])):
        name = name.removeprefix("properties.")
        if name not in names:
            names.append(name)
    return names
