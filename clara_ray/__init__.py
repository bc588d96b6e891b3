"""clara-ray: train and serve CLaRa (compressed continuous-latent RAG) on Ray."""
from clara_ray.model import CLaRa, CLaRaConfig

__all__ = ["CLaRa", "CLaRaConfig"]
__version__ = "0.1.0"
