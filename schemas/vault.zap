@version 1.0.0
# Vault: keeps payment credentials and charges them by token, so nothing else touches card data.
# PCI scope: never mounted in the main process, reached only over ZAP.

enum ChargeStatus
  succeeded
  declined
  failed

# What one charge attempt did.
struct ChargeResult
  chargeId     Text
  status       ChargeStatus
  amount       Int64         # minor units actually charged
  currency     Text          # ISO 4217 code, lower case
  processor    Text          # the processor that handled the charge
  declineCode  Text          # the processor's reason, when declined
  message      Text

interface Vault
  # Charge a vaulted token; retrying with the same idempotencyKey never charges twice.
  chargeToken (token Text, amount Int64, currency Text, processor Text, idempotencyKey Text) -> (result ChargeResult)
