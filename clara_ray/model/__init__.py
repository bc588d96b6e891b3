"""The CLaRa model: one frozen causal LM, three LoRA adapters, memory-token compression."""
from clara_ray.model.configuration import ADAPTERS, CLaRaConfig, LoraSettings
from clara_ray.model.modeling import CLaRa, StageLoss

__all__ = ["ADAPTERS", "CLaRa", "CLaRaConfig", "LoraSettings", "StageLoss"]
