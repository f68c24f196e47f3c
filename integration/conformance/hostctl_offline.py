"""pytest plugin for running sigstore-conformance offline (loaded with -p).

The suite's `client` fixture asks the network for an OIDC token even when
signing is skipped (`--skip-signing`): the token is only used to sign, but
SigstoreClient reads its `email`, `iss` and `exp` claims. This plugin answers
that one request with an unsigned stand-in token, before the suite's conftest
imports `urllib3.request`; any other network request fails at once.
"""

import base64
import json
import time

import urllib3

TOKEN_URL = "https://storage.googleapis.com/sigstore-conformance-testing-token/untrusted-testing-token.txt"


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


class _Response:
    def __init__(self, data: bytes):
        self.data = data
        self.status = 200


def _offline_request(method, url, *args, **kwargs):
    if url == TOKEN_URL:
        claims = {"email": "offline@hostctl.invalid", "iss": "https://hostctl.invalid", "exp": int(time.time()) + 3600}
        return _Response(f"{_b64({'alg': 'none'})}.{_b64(claims)}.".encode())
    raise RuntimeError(f"offline conformance run: no network request allowed ({method} {url})")


urllib3.request = _offline_request
