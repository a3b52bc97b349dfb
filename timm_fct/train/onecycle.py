"""PyTorch's OneCycleLR behind timm's scheduler calls, stepped once per optimizer update.

The paper trains with cyclical learning rates (citing Smith and Topin's super-convergence) and gives no
shape; ours is PyTorch's OneCycleLR (docs/decisions.md). It warms the learning rate up along a cosine and anneals it down, and cycles the momentum (Adam's beta1) the other way,
0.95 -> 0.85 -> 0.95. timm has no such scheduler, and an imitation from its cosine one leaves beta1 fixed;
this is OneCycleLR itself, with the two calls timm's training loop makes (step per epoch, step_update per
update). Its hyper-parameters live in the optimizer's param groups (so in every checkpoint), and its
position is the update count, so a resumed run continues on exactly the same curve.

Two shapes: OneCycleLR's default, two phases with cosine annealing (warm up to max_lr, anneal to the final
lr), and, with three_phase=True, the linear three-phase cycle of Smith and Topin's paper (up to max_lr,
back down to the starting lr symmetrically, then annihilation to the final lr), anneal_strategy='linear'.
The paper does not say which it used; the default is OneCycleLR's (docs/decisions.md).
"""
import warnings
from typing import Optional

import torch
from torch.optim.lr_scheduler import OneCycleLR


class OneCycleScheduler:
    """OneCycleLR over `total_updates`, positioned by update count; momentum cycles when the optimizer has one.

    three_phase: Smith and Topin's linear three-phase cycle (OneCycleLR(three_phase=True,
    anneal_strategy='linear')) instead of OneCycleLR's default two cosine phases.
    """

    def __init__(
            self,
            optimizer: torch.optim.Optimizer,
            max_lr: float,
            total_updates: int,
            pct_start: float = 0.3,
            div_factor: float = 25.,
            final_div_factor: float = 1e4,
            base_momentum: float = 0.85,
            max_momentum: float = 0.95,
            three_phase: bool = False,
    ):
        defaults = optimizer.defaults
        self.scheduler = OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_updates, pct_start=pct_start,
            anneal_strategy='linear' if three_phase else 'cos', three_phase=three_phase,
            div_factor=div_factor, final_div_factor=final_div_factor,
            cycle_momentum='betas' in defaults or 'momentum' in defaults,
            base_momentum=base_momentum, max_momentum=max_momentum)

    def step(self, epoch: int, metric: Optional[float] = None) -> None:
        """Per-epoch call of timm's loop: nothing to do, the schedule moves per update."""

    def step_update(self, num_updates: int, metric: Optional[float] = None) -> None:
        """Set lr and momentum for the update after `num_updates` updates."""
        if num_updates == self.scheduler.last_epoch + 1:
            self.scheduler.step()
        elif num_updates != self.scheduler.last_epoch:  # a resume: jump to the position (closed form)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)  # 'scheduler stepped before optimizer'
                self.scheduler.last_epoch = num_updates - 1
                self.scheduler.step()
