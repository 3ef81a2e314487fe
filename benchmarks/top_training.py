"""Training speed of a fine-tuned top on cached boundary activations: NCHW against channels-last inputs.

`finetune` trains the unfrozen top of the backbone on stored activations (experiment/phases.py). The stored
tensors are NCHW; oneDNN's convolutions run faster on channels-last, which is what TopOfNetwork now feeds them.
Times one training step (forward, backward, AdamW) of EfficientNet-Lite0's blocks.5, blocks.6 and conv_head with
the preset's MLP head, on random activations of the size each input resolution gives (stride 16), fp32 weights
as in `finetune`; the median of --steps steps after one warm-up step.

    python benchmarks/top_training.py --sizes 160 192 --batch 128 256
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
from torch import nn

from showdown.device import CPU, device_facts
from showdown.frozen.boundary import TopOfNetwork, sequential_layers
from showdown.models.classifier import Head


def step_seconds(top: nn.Module, activations: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in top.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(top(activations), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 192])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default="docs/benchmarks/top_training.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for size in args.sizes:
        backbone = timm.create_model("tf_efficientnet_lite0", num_classes=0)
        layers = sequential_layers(backbone, (3, size, size))
        cut = 13  # blocks.5 onwards: the preset's `--unfreeze blocks:2`
        with torch.inference_mode():
            shape = nn.Sequential(*layers[:cut])(torch.zeros(1, 3, size, size)).shape[1:]
        top = TopOfNetwork(layers[cut:], backbone, Head(backbone.num_features, 10, hidden=[1024])).train()
        for batch in args.batch:
            activations = torch.randn(batch, *shape).to(torch.bfloat16)  # stored as the boundary cache stores them
            labels = torch.randint(0, 10, (batch,))
            row = {"image_size": size, "activations": list(shape), "batch": batch}
            for layout, memory_format in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
                TopOfNetwork.memory_format = memory_format
                row[f"{layout}_img_per_s"] = batch / step_seconds(top, activations, labels, args.steps)
            row["ratio"] = row["channels_last_img_per_s"] / row["nchw_img_per_s"]
            print(f"{size} px ({'x'.join(map(str, shape))}), batch {batch}: NCHW {row['nchw_img_per_s']:.0f} img/s, "
                  f"channels-last {row['channels_last_img_per_s']:.0f} img/s ({row['ratio']:.2f}x)")
            rows.append(row)
    record = {"machine": device_facts(CPU),
              "torch": torch.__version__, "steps": args.steps, "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
