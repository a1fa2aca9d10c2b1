"""The toy MLP of seed study 004 (``model=toy_mlp``) as a Hugging Face model type, so it goes
through the same loaders, methods, trainer and measurements as every other family.

    d_in → hidden → hidden → 1, ReLU; the last layer has no bias (the seed's network).

One logit ``z`` is returned as the two-class logits ``[0, z]``: cross-entropy over them is the
logistic loss on ``z`` (``log(1 + e^{-z})`` for label 1), and their argmax is ``z > 0`` — the
seed's classifier — so the standard classification task needs no special case.
Registered with ``AutoConfig`` / ``AutoModelForSequenceClassification`` on import.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "toy_mlp"


class ToyMLPConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, d_in: int = 16, hidden: int = 32, last_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.d_in, self.hidden, self.last_bias = d_in, hidden, last_bias
        # what build_context reads of every config (no attention, no positions)
        self.num_hidden_layers, self.hidden_size, self.num_attention_heads = 3, hidden, 1
        self.max_position_embeddings = 0


class ToyMLPForClassification(PreTrainedModel):
    config_class = ToyMLPConfig
    base_model_prefix = "toy"
    main_input_name = "inputs"

    def __init__(self, config: ToyMLPConfig):
        super().__init__(config)
        self.fc1 = nn.Linear(config.d_in, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.fc3 = nn.Linear(config.hidden, 1, bias=config.last_bias)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):  # PyTorch's own default init, not BERT's N(0, 0.02)
            module.reset_parameters()

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, **_) -> SequenceClassifierOutput:
        z = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(inputs))))).squeeze(-1)
        logits = torch.stack([torch.zeros_like(z), z], dim=-1)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, ToyMLPConfig, exist_ok=True)
AutoModelForSequenceClassification.register(ToyMLPConfig, ToyMLPForClassification, exist_ok=True)
