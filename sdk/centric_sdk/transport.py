"""HTTP transports: the default one uses the standard library; tests may inject their own."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Response:
    """What a transport returns."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """Sends one request; raises OSError (incl. TimeoutError) when the server is unreachable."""

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> Response:
        """Send a request and return the response."""
        ...


class UrllibTransport:
    """A dependency-free transport on urllib (one connection per request)."""

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
             timeout: float) -> Response:
        """Send a request and return the response (HTTP errors are responses too)."""
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Response(answer.status, answer.read(), dict(answer.headers))
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read(), dict(error.headers or {}))
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, OSError):
                raise reason from error
            raise ConnectionError(str(reason)) from error
        except http.client.HTTPException as error:  # a broken answer: as good as none
            raise ConnectionError(f"{type(error).__name__}: {error}") from error
        except socket.timeout as error:  # noqa: UP041 - older names still raised by http.client
            raise TimeoutError(str(error)) from error
