"""Request and response schemas: bounded fields, unknown fields rejected, conversions to engine
parameters kept beside the fields they read."""
