"""Everything that knows HTTP: routes, request and response schemas, errors, dependencies,
middleware, responses (SSE) and the adapters between the engine and the wire formats."""
