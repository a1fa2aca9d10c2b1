"""Model families × sizes → one concrete model, loaded from a hub id, a local dir or a config.

Each family yaml (conf/model/<family>.yaml) lists its sizes with the hub checkpoint AND the
architecture values, so ``peftbench params`` can build any size on the meta device offline, and
``tiny`` is built from config with random weights (saved once to a cache dir, then loaded as a
user would load a checkpoint).
"""

from peftbench.models.loading import build_context, load_model, load_tokenizer, meta_model
from peftbench.models.spec import ModelSpec, resolve_spec

__all__ = ["ModelSpec", "resolve_spec", "build_context", "load_model", "load_tokenizer", "meta_model"]
