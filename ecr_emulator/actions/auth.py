"""GetAuthorizationToken: a docker-login password for the registry endpoint.

The token is base64 ``AWS:<password>`` with a random password, stored with the access key that
asked for it and its expiry, so that a registry endpoint can check it with ``verify_password``.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

from ecr_emulator import store
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.state import EmulatorState


@action("GetAuthorizationToken")
async def get_authorization_token(call: Call, params: Json) -> Json:
    state = call.state
    now = time.time()
    expires_at = now + state.settings.auth_token_lifetime
    data = []
    for registry_id in dict.fromkeys(params.get("registryIds") or [state.account_id]):
        password = secrets.token_urlsafe(96)
        await state.db.write(store.save_token, password,
                             access_key_id=call.identity.access_key_id,
                             region=call.identity.region, registry_id=registry_id,
                             expires_at=expires_at, now=now)
        token = base64.b64encode(f"AWS:{password}".encode()).decode()
        data.append({"authorizationToken": token, "expiresAt": expires_at,
                     "proxyEndpoint": call.base_url})
    return {"authorizationData": data}


@dataclass(frozen=True)
class TokenOwner:
    access_key_id: str | None
    region: str | None
    registry_id: str
    expires_at: float


async def verify_password(state: EmulatorState, password: str) -> TokenOwner | None:
    """Who was given ``password`` by GetAuthorizationToken, if it is still valid."""
    row = await state.db.read(store.find_token, password, time.time())
    if row is None:
        return None
    return TokenOwner(row["access_key_id"], row["region"], row["registry_id"], row["expires_at"])
