"""Data: iHarmony4 and ccHarmony readers, DALI and PyTorch loaders, dataset builders, checker."""

from pipeline.pairs import IMAGENET_MEAN, IMAGENET_STD, DatasetError, Pair

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "Pair"]
