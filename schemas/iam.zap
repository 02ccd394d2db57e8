@version 1.0.0
# Iam: who is calling. Verifies access tokens and API keys, and answers questions about
# users and orgs. The tenant of a call is the caller's identity (carried with every call).

# The verified claims of an access token or API key. `owner` is the tenant (the org slug).
struct Claims
  iss           Text
  sub           Text        # user id, client id (client_credentials) or API key id
  aud           Text        # the API audience the credential was issued for
  exp           Int64       # expiry, seconds since the epoch
  iat           Int64
  jti           Text
  owner         Text        # the org slug: the tenant
  organization  Text        # alias of owner
  email         Text
  name          Text
  roles         List(Text)
  isAdmin       Bool        # platform admin
  scope         Text        # space-separated scopes
  azp           Text        # the client the token was issued to
  kind          Text        # user, client or apikey

# A user of one org (never carries the password hash).
struct User
  id         Text
  org        Text
  email      Text
  name       Text
  roles      List(Text)
  isAdmin    Bool
  disabled   Bool
  createdAt  Int64

# An org: one tenant.
struct Org
  slug         Text
  displayName  Text
  createdAt    Int64

interface Iam
  # Verify an access token (signature, issuer, audience, expiry, revocation).
  verifyJwt (token Text) -> (claims Claims)
  # Verify an hk- API key (hash lookup, revocation); records its last use.
  verifyApiKey (key Text) -> (claims Claims)
  # A user of the caller's org.
  getUser (id Text) -> (user User)
  # The caller's own org (platform admins may ask for any).
  getOrg (slug Text) -> (org Org)
