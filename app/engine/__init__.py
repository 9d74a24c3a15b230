"""The model engine: queues, continuous batching and the worker thread that runs every forward
pass. It imports ``models/`` and nothing of FastAPI, Starlette or ``app.api``; its entry point is
``app.engine.engine.ModelEngine``."""
