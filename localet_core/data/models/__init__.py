"""The shipped models (``*.safetensors``, read by localet_core.contracts.model_card)."""
