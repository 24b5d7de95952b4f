"""Device-independent cost of a supernet's training forward: bytes autograd keeps for backward, and nodes.

On a GPU the DARTS-family supernets are launch-bound (many small kernels) and their batch size is bounded
by activation memory, so two numbers predict a change's effect there without a GPU: the size of the tensors
autograd saves for backward (unique storages, i.e. the activation memory of one step) and the number of
autograd nodes (each at least one kernel forward and one backward). Both are exact and deterministic on
CPU, unlike timings on a shared machine. Presets run at their own sizes (batch, C, cells) on synthetic data.

    python benchmarks/bench_graph.py [--presets darts-cifar10,pcdarts-cifar10] [--set batch_size=32]
"""

from __future__ import annotations

import argparse
import json

import torch


def graph_cost(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Unique bytes saved for backward and autograd node count of ``model(x).sum()``."""
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(x).sum()
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return {"saved_mib": sum(storages.values()) / 2**20, "autograd_nodes": len(seen)}


def measure(preset: str, sets: list[str]) -> dict[str, object]:
    from ostr_ray.core.config import build_config, parse_override
    from searchspaces import get_space

    config = build_config(preset, {"data_dir": "/unused", **dict(parse_override(t) for t in sets)})
    torch.manual_seed(0)
    model = get_space(config.space).build_supernet(num_classes=10, **config.space_kwargs)
    model.train()
    x = torch.randn(config.batch_size, 3, 32, 32)
    return {"preset": preset, "batch_size": config.batch_size, **config.space_kwargs, **graph_cost(model, x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="darts-cifar10,pcdarts-cifar10")
    parser.add_argument("--set", action="append", dest="sets", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [measure(preset, args.sets) for preset in args.presets.split(",")]
    print("| preset | batch | saved for backward (MiB) | autograd nodes |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['batch_size']} | {r['saved_mib']:.0f} | {r['autograd_nodes']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
