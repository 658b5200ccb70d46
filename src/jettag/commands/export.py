"""``jettag export RUN_DIR --onnx out.onnx``: a trained run's model as ONNX (dynamic batch and length)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a trained run's model (ONNX, weaver state dict)")
    p.add_argument("run_dir", help="run directory written by `jettag train`")
    p.add_argument("--onnx", help="write an ONNX model here (needs the extra: pip install 'jettag[onnx]')")
    p.add_argument("--weaver", help="write a weaver-core state dict (.pt) here (ParT and ParticleNet only)")
    p.add_argument("--which", default="best", choices=("best", "last"), help="checkpoint to export")
    p.add_argument("--logits", action="store_true", help="ONNX outputs logits instead of probabilities")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jettag.errors import UsageError, require_extra

    if not args.onnx and not args.weaver:
        raise UsageError("give --onnx PATH and/or --weaver PATH")
    if args.onnx:  # before the model is loaded or any file written
        require_extra("onnx", "ONNX export")

    import numpy as np
    import torch

    from jettag.data.kinds import get_kind
    from jettag.models.onnx import export_onnx, run_onnx
    from jettag.train.checkpoint import load_run_model

    model, _config = load_run_model(args.run_dir, which=args.which)
    model.eval()
    if args.onnx:
        path = export_onnx(model, args.onnx, probabilities=not args.logits, opset=args.opset)
        # check the file against PyTorch at a length other than the one traced
        x = get_kind(model.input_kind).example_inputs(model, batch_size=3, length=40, seed=1)
        with torch.no_grad():
            ref = model(*x)
            ref = ref if args.logits else torch.softmax(ref, dim=-1)
        diff = float(np.abs(run_onnx(path, *x) - ref.numpy()).max())
        print(f"wrote {path} (onnxruntime vs PyTorch max |diff| {diff:.2e})")
    if args.weaver:
        from jettag.models.weaver import to_weaver_state_dict

        torch.save(to_weaver_state_dict(model), args.weaver)
        print(f"wrote {args.weaver} (weaver-core naming, 'mod.' prefix)")
    return 0
