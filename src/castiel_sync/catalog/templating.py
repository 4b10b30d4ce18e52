"""URL templates for endpoints that depend on the tenant.

A few providers have no single host: Dynamics 365 scopes name the customer's own
environment (``https://{org}.crm.dynamics.com/.default``), Salesforce sandboxes log in at
``test.salesforce.com``, Atlassian's REST gateway needs the site's cloud id. A catalog
entry writes such a value as ``{name}`` and declares ``name`` under
``template_variables`` with a pattern.

The language is deliberately tiny: ``{name}`` placeholders and nothing else (no format
specs, no expressions, no escapes). Every value must match its variable's pattern *and* a
host-safe character set, so a value can never add a path, query, user-info or port to a
URL, whatever pattern an entry declares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]{0,39})\}")
# Letters, digits, dots and hyphens, not starting or ending with a dot or hyphen: enough
# for host labels, org names, GUIDs and Atlassian cloud ids, and nothing that changes
# the shape of a URL.
SAFE_VALUE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class TemplateError(ValueError):
    """A template or a value for it is not acceptable."""


class TemplateVariable(BaseModel):
    """A value a tenant's connection supplies, e.g. the Dynamics organization name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    pattern: str = Field(
        min_length=1, description="a regular expression the value must fully match"
    )
    default: str | None = None
    example: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> TemplateVariable:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {self.pattern!r} is not a regular expression: {exc}"
            ) from exc
        for label, value in (("default", self.default), ("example", self.example)):
            if value is not None and not (
                compiled.fullmatch(value) and SAFE_VALUE.fullmatch(value)
            ):
                raise ValueError(f"{label} {value!r} does not match pattern {self.pattern!r}")
        return self


def placeholders(template: str) -> set[str]:
    """The variable names a template uses; raises on any brace that is not a placeholder."""
    stripped = PLACEHOLDER.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise TemplateError(
            f"{template!r}: braces are only allowed as {{name}} placeholders "
            "(lowercase letters, digits and underscores)"
        )
    return set(PLACEHOLDER.findall(template))


def render(
    template: str,
    variables: Mapping[str, TemplateVariable],
    values: Mapping[str, str],
) -> str:
    """Substitute ``values`` (falling back to each variable's default) into ``template``.

    Raises :class:`TemplateError` naming the variable when a value is missing, undeclared
    or has characters its pattern or the host-safe set does not allow.
    """
    unknown = set(values) - set(variables)
    if unknown:
        raise TemplateError(f"unknown template variable(s): {', '.join(sorted(unknown))}")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        variable = variables.get(name)
        if variable is None:
            raise TemplateError(f"{template!r} uses undeclared variable {name!r}")
        value = values.get(name, variable.default)
        if value is None:
            raise TemplateError(f"a value for {name!r} is required ({variable.description})")
        if not SAFE_VALUE.fullmatch(value) or not re.fullmatch(variable.pattern, value):
            raise TemplateError(
                f"{name}={value!r} is not allowed: it must match {variable.pattern!r} "
                "and contain only letters, digits, dots and hyphens"
            )
        return value

    placeholders(template)  # reject stray braces before substituting anything
    return PLACEHOLDER.sub(substitute, template)


def check_https_url(url: str) -> str:
    """Raise unless ``url`` is an absolute https URL with a host (templates allowed)."""
    # Replace placeholders by a neutral label so the URL's shape can be checked.
    shape = PLACEHOLDER.sub("x", url)
    parts = urlsplit(shape)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute https URL")
    if parts.username or parts.password:
        raise ValueError(f"{url!r} must not carry credentials")
    return url
