"""GetAccountSetting, PutAccountSetting: the account settings ECR documents, stored.

BASIC_SCAN_TYPE_VERSION (AWS_NATIVE, CLAIR), REGISTRY_POLICY_SCOPE (V1, V2) and
BLOB_MOUNTING (ENABLED, DISABLED); another name or value is ValidationException. Nothing
here changes behaviour: the emulator has no scanner, one policy scope and no blob mounts.
"""

from __future__ import annotations

import time

from ecr_emulator import registry_documents as registry
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.validation import Violation, validation_exception

SETTINGS = {
    "BASIC_SCAN_TYPE_VERSION": (("AWS_NATIVE", "CLAIR"), "AWS_NATIVE"),
    "REGISTRY_POLICY_SCOPE": (("V1", "V2"), "V2"),
    "BLOB_MOUNTING": (("ENABLED", "DISABLED"), "DISABLED"),
}


def _check(member: str, value: str, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise validation_exception([Violation(
            member, f"'{value}'", f"Member must satisfy enum value set: [{', '.join(allowed)}]")])


def _known(name: str) -> tuple[tuple[str, ...], str]:
    _check("name", name, list(SETTINGS))
    return SETTINGS[name]


@action("GetAccountSetting")
async def get_account_setting(call: Call, params: Json) -> Json:
    name = params["name"]
    _, default = _known(name)
    stored = await call.state.db.read(registry.get, registry.SETTING, name)
    return {"name": name, "value": stored if stored is not None else default}


@action("PutAccountSetting")
async def put_account_setting(call: Call, params: Json) -> Json:
    name, value = params["name"], params["value"]
    allowed, _ = _known(name)
    _check("value", value, allowed)
    await call.state.db.write(registry.put, registry.SETTING, name, value, time.time())
    return {"name": name, "value": value}
