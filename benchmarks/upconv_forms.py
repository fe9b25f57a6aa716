"""Three ways to compute the decoder's up-convolution (nearest x2 upsampling + 3x3 conv),
forward + backward in bf16 channels-last at the b = 16 network's four decoder levels:

- ``literal``: upsample, then convolve (the reference path);
- ``phase``: four 2x2 phase kernels at the input's resolution, interleaved
  (:func:`napari_semimoe.core.model.upsampled_conv`, the fast path);
- ``deconv``: the same four kernels packed into one 4x4 kernel of a stride-2 transposed
  convolution (no interleaving copy; the kernel's rows are w2, w1 + w2, w0 + w1, w0).

    python benchmarks/upconv_forms.py --json docs/benchmarks/upconv_forms_zen4.json

Rounds alternate the forms so that a noisy host hits all three; medians in ms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from napari_semimoe.core.bench import cpu_description
from napari_semimoe.core.model import upsampled_conv

#: Rows of the 3x3 kernel that each of the 4 taps of the transposed convolution sums.
_PACK = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float32)


def deconv_weight(w: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in, 3, 3)`` -> the ``(C_in, C_out, 4, 4)`` weight of conv_transpose2d."""
    m = _PACK.to(w)
    return torch.einsum("ar,ocrs,bs->coab", m, w, m)


def up_deconv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return F.conv_transpose2d(x, deconv_weight(conv.weight), conv.bias, stride=2, padding=1)


def up_literal(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return conv(F.interpolate(x, scale_factor=2, mode="nearest"))


FORMS = {"literal": up_literal, "phase": upsampled_conv, "deconv": up_deconv}
#: (C_in, C_out, input side) of the decoder's up-steps on 4 tiles of 256^2, b = 16.
LEVELS = [(256, 128, 16), (128, 64, 32), (64, 32, 64), (32, 16, 128)]


def _step_ms(form, x: torch.Tensor, conv: nn.Conv2d, n: int) -> float:
    ts = []
    for i in range(n + 2):
        xx = x.detach().requires_grad_()
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = form(xx, conv)
        y.backward(torch.ones_like(y))
        if i >= 2:
            ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per form and round")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    # The forms are the same function: check it in float64 before timing them.
    conv = nn.Conv2d(6, 5, 3, padding=1).double()
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    ref = up_literal(x, conv)
    for name, form in FORMS.items():
        err = (form(x, conv) - ref).abs().max().item()
        assert err < 1e-10, f"{name} differs from the literal form by {err}"

    levels = []
    for cin, cout, side in LEVELS:
        conv = nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=torch.channels_last)
        x = torch.randn(4, cin, side, side).to(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {k: [] for k in FORMS}
        for _ in range(args.rounds):
            for name, form in FORMS.items():
                times[name].append(_step_ms(form, x, conv, args.repeats))
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        levels.append(
            {"c_in": cin, "c_out": cout, "input_side": side, "median_ms": med, "rounds_ms": times}
        )
        print(
            f"{cin:>3} -> {cout:>3} ch, {side:>3}^2 -> {2 * side}^2: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
            + f"  (deconv / phase {med['deconv'] / med['phase']:.2f}x)"
        )
    total = {k: sum(lv["median_ms"][k] for lv in levels) for k in FORMS}
    print("sum over the levels: " + ", ".join(f"{k} {v:.1f} ms" for k, v in total.items()))
    if args.json:
        doc = {"cpu": cpu_description(), "threads": args.threads, "levels": levels, "sum_ms": total}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
