"""clara-ray: train and serve CLaRa (compressed continuous-latent RAG) on Ray."""

__all__ = ["CLaRa", "CLaRaConfig"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The model pulls in torch, transformers and peft (~9 s of imports on a small CPU). Loading it
    # on first use keeps the CLI and every Ray worker that only reads records or configs light.
    if name in __all__:
        import clara_ray.model

        return getattr(clara_ray.model, name)
    raise AttributeError(f"module 'clara_ray' has no attribute {name!r}")
