"""Train OverLoCK on TinyImageNet-N with PyTorch (the twin of train.py, same flags and outputs).

Loss = CE(main head) + aux_weight * CE(auxiliary head); AdamW; validation uses the main head.
Batches come from the shared framework-free loader, so a Jittor run with the same --seed and
--init sees bit-identical batches. Each epoch appends a row to OUT/log.csv and saves
OUT/checkpoint_latest.pth (and checkpoint_best.pth); OUT/init.pth holds the starting weights,
which train.py --init accepts to start an aligned Jittor run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import overlock_torch
from utils.training import Backend, build_parser, main_guard, run_training


class TorchBackend(Backend):
    name = "torch"
    suffix = ".pth"

    def __init__(self, device: str, lr: float, weight_decay: float, aux_weight: float) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.lr, self.weight_decay, self.aux_weight = lr, weight_decay, aux_weight

    def build(self, model: str, num_classes: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = getattr(overlock_torch, model)(num_classes=num_classes).to(self.device)
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            self.params.values(),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=self.weight_decay,
        )

    def describe(self) -> dict[str, Any]:
        return {"framework": "torch", "version": torch.__version__, "device": str(self.device)}

    def model_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: Mapping[str, np.ndarray]) -> None:
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        self.model.load_state_dict(tensors, strict=True)

    def optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state
        steps = [int(state[p]["step"]) for p in self.params.values() if p in state]
        return {
            "step": max(steps, default=0),
            "exp_avg": {n: state[p]["exp_avg"].cpu().numpy() for n, p in self.params.items()},
            "exp_avg_sq": {n: state[p]["exp_avg_sq"].cpu().numpy() for n, p in self.params.items()},
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        for name, param in self.params.items():
            self.optimizer.state[param] = {
                "step": torch.tensor(float(state["step"])),
                "exp_avg": torch.from_numpy(np.array(state["exp_avg"][name])).to(self.device),
                "exp_avg_sq": torch.from_numpy(np.array(state["exp_avg_sq"][name])).to(self.device),
            }

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
        self.model.train()
        x = torch.from_numpy(images).to(self.device, non_blocking=True)
        y = torch.from_numpy(labels).to(self.device, non_blocking=True)
        out = self.model(x)
        loss_main = F.cross_entropy(out["main"], y)
        loss_aux = F.cross_entropy(out["aux"], y)
        loss = loss_main + self.aux_weight * loss_aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        total, main, aux = torch.stack([loss, loss_main, loss_aux]).tolist()  # one sync
        return total, main, aux

    def eval_logits(self, images: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.inference_mode():
            return self.model(torch.from_numpy(images).to(self.device)).float().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    args = build_parser("torch", __doc__).parse_args(argv)

    def run() -> None:
        backend = TorchBackend(args.device, args.lr, args.weight_decay, args.aux_weight)
        run_training(args, backend)

    return main_guard(run)


if __name__ == "__main__":
    sys.exit(main())
