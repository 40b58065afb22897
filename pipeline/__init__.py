"""Data: the runtime path here (iHarmony4 readers, decoder, index, DALI and PyTorch loaders, checker); builders in .builders."""

from giftnet.pipeline.pairs import IMAGENET_MEAN, IMAGENET_STD, DatasetError, Pair

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "Pair"]
