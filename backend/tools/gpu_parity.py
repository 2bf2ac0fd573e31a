"""gsplat (CUDA) against the project's CPU reference rasteriser at the same inputs, plus gsplat's speed.

    python -m backend.tools.gpu_parity [--json OUT.json] [--sizes 2000:128x96 20000:256x256 100000:512x288]

For each size: max |difference| of colour, alpha and expected depth (depth where alpha > 0.5) and of
the gradients of means, quats, scales, opacities and colours under one weighted loss, relative
to the largest reference gradient; then gsplat's forward+backward time at 200k Gaussians
(1280x720) and 1M (1920x1080). Needs CUDA; without it, one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch

from backend.render.rasterize import rasterize

PARAMS = ("means", "quats", "scales", "opacities", "colors")
TOLERANCE = 1e-3  # issue 9: colour, alpha and depth within 1e-3 of the reference


@dataclass
class Parity:
    n: int
    width: int
    height: int
    max_abs_colors: float
    max_abs_alpha: float
    max_abs_depth: float  # where the reference alpha > 0.5
    grad_rel: dict[str, float]  # max |gsplat - cpu| / max |cpu| per parameter
    grad_cos: dict[str, float]
    cpu_seconds: float
    gsplat_seconds: float

    @property
    def ok(self) -> bool:
        return (max(self.max_abs_colors, self.max_abs_alpha, self.max_abs_depth) <= TOLERANCE
                and max(self.grad_rel.values()) <= 1e-2 and min(self.grad_cos.values()) >= 0.999)


def scene(n: int, width: int, height: int, seed: int) -> list[torch.Tensor]:
    """A random cloud in front of a slightly rotated camera: means, quats, scales, opacities, colours, viewmat, K."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.2, 0.7, 0.6]) + torch.tensor([0.0, 0.0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.06 + 0.004
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    c, s = torch.cos(torch.tensor(0.1)), torch.sin(torch.tensor(0.1))
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    viewmat[:3, 3] = torch.tensor([0.05, -0.1, 0.2])
    return [means, quats, scales, opac, colors, viewmat, K]


def _render(backend: str, device: str, args: list[torch.Tensor], width: int, height: int,
            weights: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], float]:
    leaves = [a.clone().to(device).requires_grad_(i < 5) for i, a in enumerate(args)]
    t0 = time.perf_counter()
    out = rasterize(*leaves[:5], leaves[5], leaves[6], width, height, backend=backend)
    w = weights.to(device)
    loss = (out.colors * w).sum() + (out.alpha[..., 0] * w[..., 0]).sum()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    images = {"colors": out.colors, "alpha": out.alpha, "depth": out.depth}
    return ({k: v.detach().cpu() for k, v in images.items()}, [x.grad.detach().cpu() for x in leaves[:5]], secs)


def compare(n: int, width: int, height: int, seed: int | None = None) -> Parity:
    args = scene(n, width, height, n if seed is None else seed)
    weights = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(1))
    a, ga, tg = _render("gsplat", "cuda", args, width, height, weights)
    b, gb, tc = _render("cpu", "cpu", args, width, height, weights)
    solid = b["alpha"][..., 0] > 0.5
    depth = (a["depth"] - b["depth"]).abs()[..., 0][solid]
    return Parity(
        n, width, height,
        max_abs_colors=float((a["colors"] - b["colors"]).abs().max()),
        max_abs_alpha=float((a["alpha"] - b["alpha"]).abs().max()),
        max_abs_depth=float(depth.max()) if depth.numel() else 0.0,
        grad_rel={k: float((x - y).abs().max() / (y.abs().max() + 1e-12)) for k, x, y in zip(PARAMS, ga, gb)},
        grad_cos={k: float(torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0))
                  for k, x, y in zip(PARAMS, ga, gb)},
        cpu_seconds=round(tc, 3), gsplat_seconds=round(tg, 4))


def gsplat_ms(n: int, width: int, height: int, repeats: int = 20) -> float:
    """gsplat forward+backward, mean milliseconds over ``repeats`` after three warm-ups."""
    leaves = [a.cuda().requires_grad_(i < 5) for i, a in enumerate(scene(n, width, height, 7))]

    def step() -> None:
        out = rasterize(*leaves[:5], leaves[5], leaves[6], width, height, backend="gsplat")
        out.colors.sum().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats * 1000


def _size(text: str) -> tuple[int, int, int]:
    try:
        n, wh = text.split(":")
        w, h = wh.lower().split("x")
        return int(n), int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is N:WIDTHxHEIGHT, e.g. 20000:256x256, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.tools.gpu_parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=_size, default=[(2000, 128, 96), (20000, 256, 256), (100000, 512, 288)])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--no-speed", action="store_true", help="skip the gsplat timing")
    args = ap.parse_args(argv)
    from backend.infra.device import gsplat_status

    status = gsplat_status()
    if not status.ok:
        print(f"error: the parity check needs CUDA and gsplat, but {status.reason}. "
              "Run it on an NVIDIA machine with the CUDA toolkit.", file=sys.stderr)
        return 2
    res: dict = {"parity": [], "gsplat_ms": {}}
    ok = True
    for n, w, h in args.sizes:
        p = compare(n, w, h)
        ok &= p.ok
        res["parity"].append(asdict(p))
        print(f"N{n} {w}x{h}: |dcolour| {p.max_abs_colors:.2e} |dalpha| {p.max_abs_alpha:.2e} "
              f"|ddepth| {p.max_abs_depth:.2e} grad rel max {max(p.grad_rel.values()):.1e} "
              f"cos min {min(p.grad_cos.values()):.6f} {'ok' if p.ok else 'OUT OF TOLERANCE'}", flush=True)
    if not args.no_speed:
        for n, w, h in ((200_000, 1280, 720), (1_000_000, 1920, 1080)):
            ms = gsplat_ms(n, w, h)
            res["gsplat_ms"][f"N{n}_{w}x{h}"] = round(ms, 2)
            print(f"gsplat forward+backward N{n} {w}x{h}: {ms:.2f} ms", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
