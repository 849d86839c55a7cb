"""tadistill: task-agnostic knowledge distillation of Transformer language models."""

__version__ = "0.1.0"
