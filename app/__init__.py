"""charlm's HTTP service: FastAPI app, settings, engine and routes."""
