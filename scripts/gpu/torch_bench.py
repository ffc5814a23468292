#!/usr/bin/env python3
"""The peers of the GPU check (docs/gpu-check.md), timed with PyTorch.

  torch_bench.py info
  torch_bench.py gemm --shapes MxNxK[,MxNxK...] [--repeats N] [--warmup W]
  torch_bench.py sdpa --seqs S[,S...] [--batch B] [--heads H] [--head-dim D]
                      [--repeats N] [--warmup W]

Prints one JSON object per line on stdout (per shape, per attention
backend). Timings are CUDA events around each call, the median of --repeats
calls after --warmup calls, as scripts/gpu/hopper_gemm_check.cu times the
colossus kernel.

gemm: torch.nn.functional.linear(x, w) with x [M, K] and w [N, K] bf16,
bf16 out (cuBLAS): the colossus kernel's operation C = x @ w^T.
FLOPs 2*M*N*K.

sdpa: torch.nn.functional.scaled_dot_product_attention, causal, bf16,
q, k, v [B, H, S, D]; the default dispatch and, where they run, the
FLASH_ATTENTION and CUDNN_ATTENTION backends forced. FLOPs (causal, the
FlashAttention papers' convention): forward 4*B*H*S*S*D / 2, backward 2.5x
the forward; "fwd_bwd" times one forward plus one backward.
"""

import argparse
import json
import statistics
import sys


def emit(obj):
    print(json.dumps(obj), flush=True)


def timed(torch, fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), min(times), max(times)


def info(torch):
    emit({"torch": torch.__version__, "cuda": torch.version.cuda,
          "cudnn": torch.backends.cudnn.version(),
          "device": torch.cuda.get_device_name(0),
          "capability": list(torch.cuda.get_device_capability(0))})


def gemm(torch, args):
    F = torch.nn.functional
    for shape in args.shapes.split(","):
        m, n, k = (int(v) for v in shape.lower().split("x"))
        g = torch.Generator(device="cuda").manual_seed(1234)
        x = (torch.rand(m, k, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16)
        w = (torch.rand(n, k, device="cuda", generator=g) * 2 - 1).to(torch.bfloat16)
        med, lo, hi = timed(torch, lambda: F.linear(x, w), args.repeats, args.warmup)
        emit({"op": "linear", "m": m, "n": n, "k": k, "dtype": "bf16",
              "median_ms": med, "min_ms": lo, "max_ms": hi, "repeats": args.repeats,
              "tflops": 2.0 * m * n * k / (med * 1e-3) / 1e12})
        del x, w
        torch.cuda.empty_cache()


def sdpa(torch, args):
    F = torch.nn.functional
    backends = [("default", None)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backends += [("flash", SDPBackend.FLASH_ATTENTION),
                     ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    except ImportError:  # older torch: only the default dispatch
        sdpa_kernel = None
    b, h, d = args.batch, args.heads, args.head_dim
    for s in (int(v) for v in args.seqs.split(",")):
        g = torch.Generator(device="cuda").manual_seed(1234)
        q, k, v = (torch.randn(b, h, s, d, device="cuda", generator=g,
                               dtype=torch.bfloat16).requires_grad_(True)
                   for _ in range(3))
        dout = torch.randn(b, h, s, d, device="cuda", generator=g, dtype=torch.bfloat16)
        fwd_flops = 4.0 * b * h * s * s * d / 2
        for label, backend in backends:
            def fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd():
                q.grad = k.grad = v.grad = None
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out.backward(dout)

            rec = {"op": "sdpa", "backend": label, "batch": b, "heads": h, "seq": s,
                   "head_dim": d, "causal": True, "dtype": "bf16", "repeats": args.repeats}
            try:
                if backend is None:
                    f, fb = timed(torch, fwd, args.repeats, args.warmup), \
                        timed(torch, fwd_bwd, args.repeats, args.warmup)
                else:
                    with sdpa_kernel([backend]):
                        f, fb = timed(torch, fwd, args.repeats, args.warmup), \
                            timed(torch, fwd_bwd, args.repeats, args.warmup)
                rec.update({"fwd_median_ms": f[0], "fwd_bwd_median_ms": fb[0],
                            "fwd_tflops": fwd_flops / (f[0] * 1e-3) / 1e12,
                            "fwd_bwd_tflops": 3.5 * fwd_flops / (fb[0] * 1e-3) / 1e12})
            except Exception as e:  # a backend that does not run here
                rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            emit(rec)
        del q, k, v, dout
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    g = sub.add_parser("gemm")
    g.add_argument("--shapes", required=True)
    g.add_argument("--repeats", type=int, default=50)
    g.add_argument("--warmup", type=int, default=5)
    a = sub.add_parser("sdpa")
    a.add_argument("--seqs", required=True)
    a.add_argument("--batch", type=int, default=1)
    a.add_argument("--heads", type=int, default=32)
    a.add_argument("--head-dim", type=int, default=128)
    a.add_argument("--repeats", type=int, default=20)
    a.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("torch_bench.py: torch sees no CUDA device", file=sys.stderr)
        return 2
    info(torch)
    if args.cmd == "gemm":
        gemm(torch, args)
    elif args.cmd == "sdpa":
        sdpa(torch, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
