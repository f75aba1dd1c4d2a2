"""A browser at HTTP level for the single sign-on tests and the `make run` demo: follows the login through the
identity provider's own login form (the dev IdP or Keycloak: same element ids), keeps the gateway's cookies
in its own jar (every Set-Cookie attribute visible to the caller; paths honoured, `Max-Age=0` deletes) and
the provider's cookies in a requests session.

Browser-facing provider URLs use the issuer's host (`keycloak.keycloak.svc.cluster.local`); the provider
listens on loopback, so they are sent to `provider_base` with the path and query kept and that host in the
`Host` header (requests then also keeps the provider's cookies under that name, as a browser would).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def set_cookies(resp: requests.Response) -> list[str]:
    return resp.raw.headers.getlist("Set-Cookie")


class HttpBrowser:
    def __init__(self, gateway_base: str, provider_base: str, timeout: float = 10):
        self.gateway_base = gateway_base.rstrip("/")
        self.provider_base = provider_base.rstrip("/")
        self.timeout = timeout
        self.jar: dict[str, tuple[str, str]] = {}  # name -> (value, path)
        self.provider = requests.Session()

    def store(self, resp: requests.Response) -> list[str]:
        cookies = set_cookies(resp)
        for c in cookies:
            parts = c.split("; ")
            name, value = parts[0].split("=", 1)
            attrs = dict(p.split("=", 1) if "=" in p else (p, "") for p in parts[1:])
            if attrs.get("Max-Age") == "0":
                self.jar.pop(name, None)
            else:
                self.jar[name] = (value, attrs.get("Path", "/"))
        return cookies

    def cookie_header(self, path: str) -> str | None:
        sent = [f"{n}={v}" for n, (v, p) in sorted(self.jar.items()) if path.startswith(p)]
        return "; ".join(sent) or None

    def get(self, path: str, accept: str = HTML, method: str = "GET", extra_cookies: str = "",
            headers: dict | None = None) -> requests.Response:
        """A request to the gateway (a page load unless `accept`/`method` say otherwise)."""
        h = {"Accept": accept}
        h.update(headers or {})
        c = "; ".join(x for x in (extra_cookies, self.cookie_header(path.split("?")[0])) if x)
        if c:
            h["Cookie"] = c
        r = requests.request(method, self.gateway_base + path, headers=h, timeout=self.timeout,
                             allow_redirects=False)
        self.store(r)
        return r

    def provider_url(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{self.provider_base}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _host(self, url: str) -> dict:
        """The Host header a browser would send for `url` (Keycloak checks its front-channel hostname)."""
        netloc = urlsplit(url).netloc
        return {"Host": netloc} if netloc else {}

    def provider_get(self, url: str) -> requests.Response:
        """A page of the provider (browser-facing URL), with this browser's provider cookies."""
        return self.provider.get(self.provider_url(url), allow_redirects=False, timeout=self.timeout,
                                 headers=self._host(url))

    def to_provider(self, location: str, user: str, password: str | None = None) -> requests.Response:
        """At the provider: the login form (submitted), or with a provider session the redirect at once."""
        r = self.provider_get(location)
        if r.status_code == 200:
            if 'id="kc-form-login"' not in r.text:
                raise AssertionError(f"not a login page: {r.text[:300]}")
            action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
            r = self.provider.post(self.provider_url(action), allow_redirects=False, timeout=self.timeout,
                                   headers=self._host(action if "://" in action else location),
                                   data={"username": user, "password": password or user})
        if r.status_code != 302:
            raise AssertionError(f"the provider did not redirect: {r.status_code} {r.text[:300]}")
        return r

    def callback(self, provider_redirect: requests.Response) -> requests.Response:
        loc = urlsplit(provider_redirect.headers["Location"])
        if f"{loc.scheme}://{loc.netloc}" != self.gateway_base or loc.path != "/oauth2/callback":
            raise AssertionError(f"not this gateway's callback: {provider_redirect.headers['Location']}")
        return self.get(f"{loc.path}?{loc.query}")

    def login(self, path: str = "/", user: str = "alice") -> requests.Response:
        """From an unauthenticated page load to that page (its response)."""
        r = self.get(path)
        if r.status_code != 302 or "/protocol/openid-connect/auth?" not in r.headers.get("Location", ""):
            raise AssertionError(f"no redirect to the login page: {r.status_code} {r.text[:300]}")
        back = self.callback(self.to_provider(r.headers["Location"], user))
        if back.status_code != 302 or back.headers["Location"] != path:
            raise AssertionError(f"the callback did not return to {path}: {back.status_code} {back.text[:300]}")
        return self.get(path)
