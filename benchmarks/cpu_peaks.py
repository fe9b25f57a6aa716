"""What this CPU allows: matrix and convolution throughput in fp32 and bf16, and the share of
a training step that the network's convolutions take.

    python benchmarks/cpu_peaks.py --json docs/benchmarks/cpu_peaks_zen4.json

The fast path's speed-up over the fp32 reference is bounded by how much faster this CPU
multiplies in bf16 than in fp32: with AMX tiles several times, with AVX512-BF16 alone about
twice. This measures that bound where the ratio is reported:

- GEMM 2048^3, fp32 and bf16 (the hardware's peak for large matrices);
- each 3x3 convolution shape of the b = 16 network on a batch of 4 tiles of 256^2, forward
  and backward (input + weight gradients), fp32 NCHW (the reference path's layout) and bf16
  channels-last (the fast path's), as GFLOP/s, and the multiply-add-weighted sum of the
  per-layer times over one training step of the fast path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from napari_semimoe.core.bench import cpu_description


def _median_ms(fn, n: int) -> float:
    for _ in range(2):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1e3


def gemm(n: int = 2048, rounds: int = 7) -> dict:
    """fp32 and bf16 GEMM GFLOP/s, timed in turn; the ratio is the median of the rounds'
    ratios (this shared VM's speed drifts by tens of percent within minutes)."""
    mats = {d: (torch.randn(n, n).to(d), torch.randn(n, n).to(d)) for d in GEMM_DTYPES}
    rates: dict[torch.dtype, list[float]] = {d: [] for d in GEMM_DTYPES}
    for _ in range(rounds):
        for d, (a, b) in mats.items():
            rates[d].append(2 * n**3 / _median_ms(lambda a=a, b=b: a @ b, 3) / 1e6)
    f32, b16 = (np.array(rates[d]) for d in GEMM_DTYPES)
    return {
        "gemm_fp32_gflops": round(float(np.median(f32)), 1),
        "gemm_bf16_gflops": round(float(np.median(b16)), 1),
        "gemm_bf16_over_fp32": round(float(np.median(b16 / f32)), 2),
        "gemm_bf16_over_fp32_rounds": (b16 / f32).round(2).tolist(),
    }


GEMM_DTYPES = (torch.float32, torch.bfloat16)


def conv_shapes(width: int = 16, tile: int = 256) -> list[tuple[int, int, int, int]]:
    """(C_in, C_out, size, uses per expert) of the 3x3 convolutions at the fast path's shapes
    (up-convolutions as 2x2 phase kernels are not 3x3 and are left out)."""
    w = [width * 2**i for i in range(5)]
    shapes = [(3, w[0], tile, 1), (w[0], w[0], tile, 1)]
    for i in range(1, 5):
        s = tile >> i
        shapes += [(w[i - 1], w[i], s, 1), (w[i], w[i], s, 1)]
    for i in range(4, 0, -1):  # decoder block: concat conv = two C -> C convolutions, then C -> C
        c, s = w[i - 1], tile >> (i - 1)
        shapes += [(c, c, s, 3)]
    return shapes


def conv_rates(batch: int, repeats: int) -> list[dict]:
    """Every shape twice; the first round only warms oneDNN and the allocator up (the first
    shapes measured ran up to 2.5x slow otherwise)."""
    for rnd in range(2):
        rows = _conv_round(batch, repeats if rnd else 1)
    return rows


def _conv_round(batch: int, repeats: int) -> list[dict]:
    rows = []
    cl = torch.channels_last
    for cin, cout, size, uses in conv_shapes():
        flop = 2 * batch * size * size * cin * cout * 9
        row = {"c_in": cin, "c_out": cout, "size": size, "uses_per_expert": uses}
        for name, dtype, fmt in (
            ("fp32_nchw", torch.float32, torch.contiguous_format),
            ("bf16_cl", torch.bfloat16, cl),
        ):
            x = torch.randn(batch, cin, size, size).to(dtype).contiguous(memory_format=fmt)
            w = torch.randn(cout, cin, 3, 3).to(dtype).contiguous(memory_format=fmt)
            g = torch.randn(batch, cout, size, size).to(dtype).contiguous(memory_format=fmt)
            mask = [cin != 3, True, False]  # the first layer needs no input gradient

            def bwd(x=x, w=w, g=g, mask=mask):
                torch.ops.aten.convolution_backward(
                    g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
                )

            fwd_ms = _median_ms(lambda x=x, w=w: F.conv2d(x, w, padding=1), repeats)
            bwd_ms = _median_ms(bwd, repeats)
            bwd_flop = flop * (2 if mask[0] else 1)
            row[name] = {
                "fwd_ms": round(fwd_ms, 2),
                "bwd_ms": round(bwd_ms, 2),
                "fwd_gflops": round(flop / fwd_ms / 1e6, 1),
                "bwd_gflops": round(bwd_flop / bwd_ms / 1e6, 1),
            }
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {**cpu_description(), "threads": args.threads, "torch": torch.__version__}
    out.update(gemm(rounds=args.repeats))
    rows = conv_rates(batch=4, repeats=args.repeats)
    out["convolutions"] = rows
    for name in ("fp32_nchw", "bf16_cl"):
        # one expert, 4 tiles: every 3x3 layer's forward + backward, times its uses
        ms = sum((r[name]["fwd_ms"] + r[name]["bwd_ms"]) * r["uses_per_expert"] for r in rows)
        out[f"conv3x3_step_ms_{name}"] = round(3 * ms, 1)  # three experts
    out["conv3x3_step_fp32_over_bf16"] = round(
        out["conv3x3_step_ms_fp32_nchw"] / out["conv3x3_step_ms_bf16_cl"], 2
    )
    print(json.dumps({k: v for k, v in out.items() if k != "convolutions"}, indent=1))
    for r in rows:
        print(
            f"{r['c_in']:>3} -> {r['c_out']:<3} @ {r['size']:>3}^2 x{r['uses_per_expert']}: "
            + "  ".join(
                f"{n} fwd {r[n]['fwd_ms']:.1f} ms ({r[n]['fwd_gflops']:.0f} GF/s) "
                f"bwd {r[n]['bwd_ms']:.1f} ms ({r[n]['bwd_gflops']:.0f} GF/s)"
                for n in ("fp32_nchw", "bf16_cl")
            )
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
