"""peftbench: fair, measured comparisons of parameter-efficient fine-tuning methods."""

__version__ = "0.1.0"
