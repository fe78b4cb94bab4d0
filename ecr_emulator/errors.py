"""AwsError: an error in AWS's JSON shape, raised anywhere and rendered by the dispatcher."""

from __future__ import annotations

from typing import Any


class AwsError(Exception):
    """``{"__type": name, "message": ..., **extra}`` with an HTTP status.

    ``extra`` carries an exception's modelled members (InvalidLayerPartException has
    registryId, repositoryName, uploadId and lastValidByteReceived), which botocore exposes
    on the raised exception's ``response``.
    """

    def __init__(self, name: str, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"__type": self.name, "message": self.message, **self.extra}


def server_error(message: str = "An internal error occurred") -> AwsError:
    # 500 makes botocore retry, as it does for AWS's own ServerException.
    return AwsError("ServerException", message, status=500)
