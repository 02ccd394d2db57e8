"""The sign-in page of `/v1/iam/oauth/authorize`: brand-themed HTML and its CSRF token.

CSRF (double submit, signed): the page sets a random cookie and embeds
HMAC(key, cookie) in the form; a POST passes only if the two agree. A page from another
origin can neither read the cookie nor compute the HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from hanzocloud.brand import Brand

CSRF_COOKIE = "hc_csrf"
COOKIE_PATH = "/v1/iam/oauth"
HIDDEN = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
          "code_challenge_method", "nonce")


def new_csrf_cookie() -> str:
    """A fresh random cookie value."""
    return secrets.token_urlsafe(24)


def csrf_token(key: bytes, cookie: str) -> str:
    """The form token bound to `cookie`."""
    mac = hmac.new(key, b"csrf:" + cookie.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(key: bytes, cookie: str | None, token: str | None) -> bool:
    """Whether the posted token matches the cookie (constant time)."""
    if not cookie or not token or len(cookie) > 100 or len(token) > 100:
        return False
    return hmac.compare_digest(csrf_token(key, cookie), token)


_CSP_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")  # a DNS name or an IP literal


def _csp_origin(uri: str) -> str:
    """The origin of `uri` as a CSP source (scheme, host, port; nothing else of the URI can
    reach the header), or "" when it has none that is safe to name."""
    try:
        target = urlsplit(uri)
        host, port = target.hostname or "", target.port
    except ValueError:
        return ""
    if target.scheme not in ("http", "https") or not _CSP_HOST.fullmatch(host):
        return ""
    shown = f"[{host}]" if ":" in host else host
    return f"{target.scheme}://{shown}" + (f":{port}" if port is not None else "")


def security_headers(redirect_uri: str) -> dict[str, str]:
    """No caching, no framing, and a CSP that lets the form post here and redirect back."""
    origin = _csp_origin(redirect_uri)
    return {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                    "img-src https: data:; frame-ancestors 'none'; "
                                    f"form-action 'self' {origin}".rstrip()),
    }


def render(brand: Brand, *, app_name: str, params: Mapping[str, str], csrf: str,
           email: str = "", error: str = "") -> str:
    """The sign-in page."""
    e = html.escape
    c = brand.colors
    hidden = "\n".join(
        f'      <input type="hidden" name="{k}" value="{e(params[k])}">'
        for k in HIDDEN if params.get(k))
    logo = (f'<img class="logo" src="{e(brand.logo_url)}" alt="{e(brand.display_name)}">'
            if brand.logo_url.startswith("https://") else "")
    notice = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Sign in · {e(brand.display_name)}</title>
  <style>
    body {{ margin: 0; font-family: system-ui, sans-serif; background: {c.background};
           color: {c.primary}; display: grid; place-items: center; min-height: 100vh; }}
    main {{ width: min(360px, 90vw); padding: 2rem; border: 1px solid {c.primary}22;
           border-radius: 12px; box-shadow: 0 4px 24px {c.primary}14; }}
    .logo {{ height: 40px; display: block; margin-bottom: 1rem; }}
    h1 {{ font-size: 1.25rem; margin: 0 0 .25rem; }}
    p.sub {{ margin: 0 0 1.5rem; opacity: .7; }}
    label {{ display: block; font-size: .875rem; margin: .75rem 0 .25rem; }}
    input[type=email], input[type=password] {{ width: 100%; box-sizing: border-box;
           padding: .6rem; border: 1px solid {c.primary}44; border-radius: 6px; }}
    button {{ margin-top: 1.25rem; width: 100%; padding: .7rem; border: 0; border-radius: 6px;
             background: {c.accent}; color: #fff; font-weight: 600; cursor: pointer; }}
    .error {{ color: {c.accent}; font-weight: 600; }}
  </style>
</head>
<body>
  <main>
    {logo}
    <h1>Sign in to {e(brand.display_name)}</h1>
    <p class="sub">to continue to {e(app_name)}</p>
    {notice}
    <form method="post" action="/v1/iam/oauth/authorize">
      <input type="hidden" name="csrf_token" value="{e(csrf)}">
{hidden}
      <label for="email">Email</label>
      <input id="email" type="email" name="email" value="{e(email)}" autocomplete="username"
             required autofocus>
      <label for="password">Password</label>
      <input id="password" type="password" name="password" autocomplete="current-password"
             required>
      <button type="submit">Sign in</button>
    </form>
  </main>
</body>
</html>
"""
