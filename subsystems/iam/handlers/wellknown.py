"""OIDC discovery (`/.well-known/openid-configuration`, RFC 8414 metadata) and the JWKS."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from subsystems.iam.service import IamService


def discovery_document(service: IamService) -> dict[str, Any]:
    """The provider metadata every OIDC/OAuth client reads first."""
    issuer = service.issuer
    oauth = f"{issuer}/v1/iam/oauth"
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{oauth}/authorize",
        "token_endpoint": f"{oauth}/token",
        "userinfo_endpoint": f"{oauth}/userinfo",
        "introspection_endpoint": f"{oauth}/introspect",
        "revocation_endpoint": f"{oauth}/revoke",
        "end_session_endpoint": f"{oauth}/logout",
        "jwks_uri": f"{issuer}/.well-known/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  "password"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [service.config.alg],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic",
                                                       "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "owner", "organization",
                             "email", "name", "roles", "isAdmin", "scope", "azp", "sid"],
        "authorization_response_iss_parameter_supported": True,
        "access_token_audience": service.tokens.audience,
    }


class WellKnownHandlers:
    """Discovery and key publication."""

    def __init__(self, service: IamService) -> None:
        self.service = service

    async def openid_configuration(self, _: Request) -> Response:
        """OpenID Connect Discovery 1.0 metadata."""
        return JSONResponse(discovery_document(self.service),
                            headers={"Cache-Control": "public, max-age=300"})

    async def jwks(self, _: Request) -> Response:
        """The public signing keys, including retired keys whose tokens may still be valid."""
        await self.service.keys.refresh()
        return JSONResponse(self.service.keys.jwks(),
                            headers={"Cache-Control": "public, max-age=60"})
