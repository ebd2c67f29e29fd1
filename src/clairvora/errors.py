"""Problem details (RFC 9457): every error the API returns is one of these."""

from typing import Any


class Problem(Exception):
    """An error with an HTTP status and a stable machine `code`."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        assert 400 <= status <= 599, status
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail or title
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "type": f"https://docs.clairvora.com/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


def bad_request(detail: str, field: str | None = None, code: str = "invalid_request") -> Problem:
    extra = {"field": field} if field else None
    return Problem(400, code, "Invalid request", detail, extra=extra)


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "not_found", "Not found", f"No such {what}.")


def conflict(code: str, detail: str) -> Problem:
    return Problem(409, code, "Conflict", detail)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"www-authenticate": 'Bearer realm="clairvora"'}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def unprocessable(code: str, detail: str) -> Problem:
    return Problem(422, code, "Unprocessable request", detail)


def service_unavailable(detail: str, retry_after_s: int = 1) -> Problem:
    return Problem(
        503,
        "temporarily_unavailable",
        "Temporarily unavailable",
        detail,
        headers={"retry-after": str(retry_after_s)},
    )
