"""charlm training: corpus preparation, the truncated-BPTT loop, checkpoints and the CLIs.

Imports ``models``; never imported by it or by ``app``.
"""
