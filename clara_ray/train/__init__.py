"""Ray Train + DeepSpeed trainer for the three CLaRa stages (`train_stage(TrainConfig)`)."""
from clara_ray.train.config import TrainConfig

__all__ = ["TrainConfig", "train_stage"]


def __getattr__(name: str):
    # The trainer pulls in Ray; load it on first use so config validation stays light.
    if name == "train_stage":
        from clara_ray.train.trainer import train_stage

        return train_stage
    raise AttributeError(name)
