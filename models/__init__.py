"""charlm models: architectures, vocabulary, checkpoints, scoring and sampling.

This package depends on nothing else in the project; ``training`` and ``app`` import it.
"""

from models.base import CharLM, State
from models.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import available_architectures, build_model, register
from models.vocab import CharVocab

__all__ = [
    "CharLM",
    "CharVocab",
    "CheckpointError",
    "LoadedCheckpoint",
    "ModelConfig",
    "State",
    "available_architectures",
    "build_model",
    "load_checkpoint",
    "register",
    "save_checkpoint",
]
