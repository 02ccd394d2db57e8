@version 1.0.0
# Payments: intents that commerce creates and confirms against a vaulted payment token.
# PCI scope: never mounted in the main process, reached only over ZAP. The org is the
# caller's identity (carried with every call), so no method takes it as a parameter.

enum IntentStatus
  requiresConfirmation
  processing
  succeeded
  failed
  canceled

# A free-form key/value pair the caller attaches to an intent.
struct MetadataEntry
  key    Text
  value  Text

# One payment in flight: an amount in one currency, for one org.
struct PaymentIntent
  id              Text
  org             Text                 # the tenant that owns the intent
  amount          Int64                # minor units (cents for usd)
  currency        Text                 # ISO 4217 code, lower case
  status          IntentStatus
  token           Text                 # vault token of the payment method, never card data
  processor       Text                 # processor hint, e.g. stripe; empty = default route
  description     Text
  metadata        List(MetadataEntry)
  chargeId        Text                 # set once the vault charged the token
  failureCode     Text
  failureMessage  Text
  createdAtMs     Int64
  updatedAtMs     Int64

interface Payments
  # Create an intent in requiresConfirmation; the same idempotencyKey returns the same intent.
  createIntent (amount Int64, currency Text, token Text, processor Text, description Text, metadata List(MetadataEntry), idempotencyKey Text) -> (intent PaymentIntent)
  # Charge the intent's token through the vault; returns the intent in its final state.
  confirmIntent (id Text) -> (intent PaymentIntent)
  getIntent (id Text) -> (intent PaymentIntent)
