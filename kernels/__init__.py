"""Hot-path ops of GiftNet: Triton kernels with pure-PyTorch references chosen by `impl=`."""

from giftnet.kernels.masked_modconv import masked_modconv2d, masked_modconv2d_reference
from giftnet.kernels.relation import (
    relation_distill_loss,
    relation_distill_loss_reference,
    relation_map,
    relation_map_reference,
)

__all__ = [
    "masked_modconv2d",
    "masked_modconv2d_reference",
    "relation_distill_loss",
    "relation_distill_loss_reference",
    "relation_map",
    "relation_map_reference",
]
