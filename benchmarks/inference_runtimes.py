"""The prediction network on other inference runtimes: OpenVINO and ONNX Runtime against
PyTorch (today's path and the folded inference copy), network only, in one process.

Issue 18 names them as candidates for the network's >= 1.5x; they would become a
dependency only if they won. The network is the default Semi-MoE (``--width``), untrained
(speed does not depend on the weights; batch-norm statistics are randomised so folding
is not a no-op), fp32, tiles of 256². Both runtimes get the folded copy through
``torch.export`` (OpenVINO's ``convert_model`` of the exported program; ONNX through the
dynamo exporter, which needs ``onnxscript``); the TorchScript-traced conversions of this
network gave wrong outputs (max |diff| ~5 against eager), so they are not used. Every
runtime's outputs are checked against eager PyTorch before it is timed.

    pip install openvino onnxruntime onnxscript   # not dependencies of the plugin
    python benchmarks/inference_runtimes.py --json docs/benchmarks/inference_runtimes.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch


class _Flat(torch.nn.Module):
    """The model's outputs as a flat tuple (what exporters need)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return tuple(out.gated[k] for k in sorted(out.gated)) + tuple(
            out.gates[k] for k in sorted(out.gates)
        )


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _max_diff(a, b) -> float:
    return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a, b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()

    from napari_semimoe.core.bench import cpu_description
    from napari_semimoe.core.config import TrainConfig
    from napari_semimoe.core.families import get_family
    from napari_semimoe.core.inference.optimize import inference_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_family().build(TrainConfig(width=args.width)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    today = _Flat(copy.deepcopy(model)).eval()
    fold_cl = _Flat(inference_model(model, channels_last=True).model).eval()
    fold = _Flat(inference_model(model, channels_last=False).model).eval()

    x0 = torch.randn(2, 3, 256, 256)
    with torch.inference_mode():
        ref0 = [t.numpy() for t in fold(x0)]
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(fold, (x0,), dynamic_shapes=({0: batch},))

    runtimes: dict[str, object] = {}
    notes: dict[str, str] = {}
    try:
        import openvino as ov

        t = time.perf_counter()
        ov_model = ov.convert_model(exported)
        compiled = ov.Core().compile_model(
            ov_model,
            "CPU",
            {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY",
             "NUM_STREAMS": 1},
        )  # fmt: skip
        notes["openvino"] = (
            f"openvino {ov.__version__}, converted in {time.perf_counter() - t:.1f} s, "
            f"precision {compiled.get_property('INFERENCE_PRECISION_HINT')}"
        )
        request = compiled.create_infer_request()

        def run_ov(x: np.ndarray):
            out = request.infer({0: x})
            return [out[o] for o in compiled.outputs]

        runtimes["openvino"] = run_ov
    except ImportError:
        notes["openvino"] = "not installed"
    try:
        import tempfile

        import onnxruntime as ort

        path = tempfile.mkdtemp(prefix="semimoe-onnx-") + "/net.onnx"
        torch.onnx.export(fold, (x0,), dynamo=True, dynamic_shapes=({0: batch},)).save(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        notes["onnxruntime"] = f"onnxruntime {ort.__version__}, CPUExecutionProvider"
        runtimes["onnxruntime"] = lambda x: session.run(None, {name: x})
    except ImportError as e:
        notes["onnxruntime"] = f"not installed ({e.name})"

    diffs = {k: _max_diff(f(x0.numpy()), ref0) for k, f in runtimes.items()}
    rows = {}
    for b in args.batches:
        x = torch.randn(b, 3, 256, 256)
        xcl = x.contiguous(memory_format=torch.channels_last)
        xn = x.numpy()
        with torch.inference_mode():
            row = {
                "torch_today": _median_time(lambda x=xcl: today(x), args.repeats),
                "torch_folded": _median_time(lambda x=xcl: fold_cl(x), args.repeats),
            }
        for k, f in runtimes.items():
            row[k] = _median_time(lambda f=f, x=xn: f(x), args.repeats)
        rows[b] = {
            "seconds": {k: round(v, 4) for k, v in row.items()},
            "speedup_vs_today": {k: round(row["torch_today"] / v, 3) for k, v in row.items()},
        }
        print(f"batch {b}: " + ", ".join(
            f"{k} {v:.3f} s ({row['torch_today'] / v:.2f}x)" for k, v in row.items()
        ), flush=True)  # fmt: skip
    result = {
        "width": args.width,
        "threads": args.threads,
        "tile": 256,
        "torch": torch.__version__,
        **cpu_description(),
        "runtimes": notes,
        "max_abs_diff_vs_torch": diffs,
        "batches": rows,
    }
    print(json.dumps({"runtimes": notes, "max_abs_diff_vs_torch": diffs}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
