"""Which failures a retry can fix: the one place that tells a blip from a mistake.

A stage that fails on the engine being unreachable, a registry answering 5xx or timing out, or a
cloud API throttling is retried (Airflow retries with backoff). A spec or configuration error, a
4xx refusal or a preflight failure fails at once: retrying it would only delay the same answer.

Errors are judged along their cause chain (``raise ... from``), so a target's own error class that
wraps, say, a botocore ``ClientError`` is judged by AWS's answer. Third-party types are matched by
module and name, which keeps this module free of imports of the libraries it judges.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# HTTP statuses that say "not now" rather than "no".
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# botocore error codes that mean throttling or a passing fault (botocore's own retry lists, plus 5xx).
_AWS_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
    "ServerException",
})

# Words of a Docker engine (or its transport) that was away, restarting or overloaded.
ENGINE_AWAY = re.compile(
    r"Failed to establish connection to any given Docker hosts|connection refused|connection reset|"
    r"broken pipe|i/o timeout|timeout|unexpected EOF|context canceled|503|502|500 Internal|"
    r"no such host|temporarily unavailable|TLS handshake",
    re.IGNORECASE,
)

# Exception classes (module prefix, class name) that mean the other side was away or overloaded.
_TRANSPORT = {
    ("requests", "ConnectionError"), ("requests", "Timeout"), ("requests", "ReadTimeout"),
    ("requests", "ConnectTimeout"), ("requests", "ChunkedEncodingError"),
    ("urllib3", "ProtocolError"), ("urllib3", "MaxRetryError"), ("urllib3", "NewConnectionError"),
    ("urllib3", "ReadTimeoutError"), ("urllib3", "ConnectTimeoutError"),
    ("httpx", "TransportError"), ("httpx", "TimeoutException"), ("httpx", "ConnectError"),
    ("httpx", "ReadError"), ("httpx", "RemoteProtocolError"), ("httpx", "ReadTimeout"), ("httpx", "ConnectTimeout"),
    ("httpcore", "ConnectError"), ("httpcore", "ReadError"), ("httpcore", "RemoteProtocolError"),
    ("botocore", "EndpointConnectionError"), ("botocore", "ConnectionClosedError"),
    ("botocore", "ConnectTimeoutError"), ("botocore", "ReadTimeoutError"),
    ("google", "RetryError"), ("google", "TransportError"),
}


class CloudDeployError(Exception):
    """The root of every error this package raises on purpose; anything else that reaches a caller is a bug.

    ``retryable`` says whether trying again may help (None: judge by the cause, see :func:`is_transient`).
    """

    retryable: bool | None = None


class UserError(CloudDeployError, ValueError):
    """The request, the spec or the installation's configuration is wrong, or asks for what cannot be done
    (a refusal): it fails at once and is never retried. The REST API answers 400; operators fail the task
    with ``AirflowFailException``."""

    retryable = False


class TargetError(CloudDeployError, RuntimeError):
    """A target, registry, engine or service refused or failed.

    Raise it with ``status=`` (the HTTP status of the answer) or ``retryable=True`` (the other side
    was unreachable or overloaded) when trying again may succeed; by default it is final.
    """

    retryable: bool | None = False

    def __init__(self, message: str, *args: object, status: int | None = None, retryable: bool | None = None):
        super().__init__(message, *args)
        if status is not None:
            self.retryable = retryable_status(status)
        if retryable is not None:
            self.retryable = retryable


class TransientError(TargetError):
    """The other side was unreachable, overloaded or went away mid-call: retried with backoff."""

    retryable = True


def retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def is_transient(error: BaseException) -> bool:
    """True when the same call may succeed a moment later; False for a user error or a refusal.

    An error nothing here recognises counts as transient, as Airflow's own default (retry) does:
    a lost answer is worse than a late failure.
    """
    for link in _cause_chain(error):
        verdict = _verdict(link)
        if verdict is not None:
            return verdict
    return True


def _cause_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _verdict(error: BaseException) -> bool | None:
    """True: transient; False: permanent; None: this link does not say, look at its cause."""
    kind = type(error)
    names = {(klass.__module__.split(".")[0], klass.__name__) for klass in kind.__mro__}
    if names & _TRANSPORT:
        return True
    status = _http_status(error, names)
    if status is not None:
        return retryable_status(status)
    if ("botocore", "ClientError") in names:
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        return code in _AWS_TRANSIENT_CODES
    if ("airflow", "AirflowFailException") in names:
        return False
    if isinstance(error, CloudDeployError) and error.retryable is not None:
        return bool(error.retryable)  # this package's errors say so themselves
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, ValueError):
        return False  # a library's complaint about a value (pydantic, yaml): what was asked is wrong
    if ("airflow", "AirflowException") in names and ENGINE_AWAY.search(str(error)):
        return True  # the docker provider's hook: "Failed to establish connection to any given Docker hosts."
    return None


def _http_status(error: BaseException, names: set[tuple[str, str]]) -> int | None:
    """The HTTP status of an API error of docker-py, kubernetes, google-api-core or httpx, when it has one."""
    if ("docker", "APIError") in names:
        response = getattr(error, "response", None)
        return getattr(response, "status_code", None)
    if ("kubernetes", "ApiException") in names:
        return getattr(error, "status", None) or None
    if ("google", "GoogleAPICallError") in names:
        return getattr(error, "code", None)
    if ("httpx", "HTTPStatusError") in names:
        return error.response.status_code  # type: ignore[attr-defined]
    return None
