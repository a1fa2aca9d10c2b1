"""Framework-overhead benchmark (``peftbench bench``) and the GPU-ready speed knobs.

Nothing here is imported by ``peftbench`` at start-up: the CLI imports it only when ``bench`` runs.
"""
