@version 1.0.0
# Kms: secrets and transit keys of the calling org, for other subsystems.
# The tenant is always the org of the identity carried with the call, never a parameter.

interface Kms
  # The latest live value behind kms://<deployment>/<org>/<purpose>; NotFound for another org's.
  getSecret (ref Text) -> (value Text)
  # Write a new version of the secret behind the reference; returns that version.
  putSecret (ref Text, value Text) -> (version Int64)
  # Encrypt with the newest version of a transit key; returns hz:v<N>:<base64>.
  encrypt (key Text, plaintext Data) -> (ciphertext Text)
  # Decrypt a hz:v<N>:<base64> ciphertext made by encrypt.
  decrypt (key Text, ciphertext Text) -> (plaintext Data)
  # Sign with the newest version of a signing key; returns hz:v<N>:<base64>.
  sign (key Text, message Data) -> (signature Text)
  # Whether a signature made by sign is valid for the message.
  verify (key Text, message Data, signature Text) -> (valid Bool)
