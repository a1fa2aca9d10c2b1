"""What a method may know about the model it adapts (the apply context), resolved from the family
yaml and a meta-device build before any weight is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApplyContext:
    """What a method may know about the model it adapts, resolved before any weight is loaded."""

    task: str  # "classification" | "causal_lm" | "image_text"
    model_type: str  # HF config.model_type, e.g. "bert", "gpt2", "llama"
    family: str  # peftbench model family, e.g. "minilm"
    num_layers: int
    hidden_size: int
    num_heads: int
    max_positions: int
    head_modules: list[str] = field(default_factory=list)  # task head names (classifier/score)
    # Default target modules for this architecture (the family yaml's `targets`): keys "attention"
    # (q/v style), "attention_all", "ffn", "all_linear" (methods pick one when the user leaves
    # target_modules null); the insertion points "attn_out", "ffn_out", "ffn_in" (bottleneck and
    # parallel adapters); "ia3" / "ia3_ffn" ((IA)³'s rescaled modules and their FFN subset).
    targets: dict[str, list[str]] = field(default_factory=dict)
    # Architecture facts from the family yaml, so methods ask the context, never a model-type table:
    conv1d: bool = False  # projections are transformers Conv1D (GPT-2), not nn.Linear
    past_key_values: bool = False  # attention accepts past key/values (prefix-style methods)
    # Read off the meta-device build: does any parameter of the task model end in ".bias"?
    # None when unknown (a context built by hand).
    has_bias: bool | None = None
    layers_path: str = ""  # dotted path to the ModuleList of transformer blocks
    hf_config: Any = None  # the transformers PretrainedConfig (no weights)
    # Qualified module names of the task model, read off a meta-device build: lets methods refuse
    # targets that match nothing before any weight is loaded.
    module_names: list[str] = field(default_factory=list)
    # What the classification head reads (models/heads.py): cls_pooler | cls | mean | last_token.
    pooling: str | None = None

    @property
    def peft_task_type(self) -> str | None:
        """peft's task type; None (a plain PeftModel that passes every input through) for image_text."""
        return {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}.get(self.task)
