"""The named sizes of a training run (``--preset``): model widths, chunk and batch shapes,
learning rate and regularisation, and a step budget, for ``training.config.config_from_preset``.
"""

from __future__ import annotations

from typing import Any

#: named sizes; explicit command-line flags override these values
PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop; for smoke tests and tiny corpora
    "tiny": {
        "embed_size": 32,
        "hidden_size": 128,
        "num_layers": 1,
        "seq_len": 64,
        "batch_size": 16,
        "lr": 3e-3,
        "dropout": 0.0,
        "max_steps": 1000,
    },
    # the service's default model: minutes on a 2-core CPU. One wide layer learns faster per
    # second than two of 256 at the same cost; short chunks give many updates a minute; dropout
    # and weight decay keep the 1.2M weights from overfitting a small corpus, and with them a
    # high learning rate pays (docs/benchmarks.md)
    "small": {
        "embed_size": 64,
        "hidden_size": 512,
        "num_layers": 1,
        "seq_len": 16,
        "batch_size": 64,
        "lr": 8e-3,
        "weight_decay": 0.075,
        "dropout": 0.1,
        "max_steps": 5000,
    },
    # a GPU or a long CPU run
    "medium": {
        "embed_size": 128,
        "hidden_size": 512,
        "num_layers": 3,
        "seq_len": 256,
        "batch_size": 64,
        "lr": 2e-3,
        "dropout": 0.2,
        "max_steps": 20000,
    },
}
#: sizes the model to the corpus, the budget and the device when the run starts (training.auto);
#: until then, and for the architectures it does not size, it holds the ``small`` values
AUTO_PRESET = "auto"
DEFAULT_PRESET = AUTO_PRESET
PRESET_NAMES = (AUTO_PRESET, *PRESETS)


def preset_values(preset: str) -> dict[str, Any]:
    """The values of the preset named ``preset`` (``auto``: those of ``small`` until the run
    sizes it); a ``ValueError`` names the presets for an unknown name."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    return PRESETS["small" if preset == AUTO_PRESET else preset]
