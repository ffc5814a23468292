"""Prints the GPU check's table rows (gpu_check.table) for made-up attention
results: the ratio is computed only from a measured colossus forward whose
numerics passed and a measured SDPA forward (test/scripts/gpu-check.test)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "gpu"))
import gpu_check  # noqa: E402

sdpa = [{"op": "sdpa", "backend": "default", "seq": s, "head_dim": 128,
         "fwd_tflops": 500.0, "fwd_bwd_tflops": 300.0} for s in (4096, 16384)]
results = {
    "numerics": [], "gemm": [], "train": [],
    "manifest": {"attention": {"colossus": "forward by hopper_attention_check"}},
    "attention_colossus": [
        {"name": "attn S=4096", "seq": 4096, "status": "pass", "rel_error": 3e-3, "tol": 1e-2,
         "tflops": 400.0, "median_ms": 1.0},
        {"name": "attn S=16384", "seq": 16384, "status": "fail", "rel_error": 0.9, "tol": 1e-2,
         "tflops": 450.0},
        {"name": "attn bwd S=4096", "seq": 4096, "status": "pass", "rel_error": 4e-3, "tol": 1e-2,
         "median_ms": 2.5, "tflops": 220.0, "backward": "dkdv"},
        {"name": "attn dq S=4096", "seq": 4096, "status": "pass", "rel_error": 4e-3, "tol": 1e-2,
         "median_ms": 1.5, "tflops": 200.0, "backward": "dq"},
    ],
    "attention": sdpa,
}
if sys.argv[1:] == ["v3"]:
    # The v3 backward schedule's kernels (--hopper-attention-bwd=v3) and a
    # shape timed under both schedules (llama-1b's backward).
    results["attention_colossus"] += [
        {"name": "attn bwd v3 S=4096", "seq": 4096, "status": "pass", "rel_error": 4e-3, "tol": 1e-2,
         "median_ms": 1.5, "tflops": 300.0, "backward": "dkdv", "variant": "v3"},
        {"name": "attn dq v3 S=4096", "seq": 4096, "status": "pass", "rel_error": 4e-3, "tol": 1e-2,
         "median_ms": 1.0, "tflops": 250.0, "backward": "dq", "variant": "v3"},
        {"name": "attn bwd v3 S=16384", "seq": 16384, "status": "pass", "rel_error": 4e-3, "tol": 1e-2,
         "median_ms": 20.0, "tflops": 300.0, "backward": "dkdv", "variant": "v3"},
        {"name": "llama dkdv", "seq": 2048, "status": "pass", "rel_error": 4e-3, "tol": 1e-2, "median_ms": 0.4,
         "backward": "dkdv", "shape": "llama-1b S=2048"},
        {"name": "llama dq", "seq": 2048, "status": "pass", "rel_error": 4e-3, "tol": 1e-2, "median_ms": 0.2,
         "backward": "dq", "shape": "llama-1b S=2048"},
        {"name": "llama dkdv v3", "seq": 2048, "status": "pass", "rel_error": 4e-3, "tol": 1e-2, "median_ms": 0.3,
         "backward": "dkdv", "variant": "v3", "shape": "llama-1b S=2048"},
        {"name": "llama dq v3", "seq": 2048, "status": "pass", "rel_error": 4e-3, "tol": 1e-2, "median_ms": 0.2,
         "backward": "dq", "variant": "v3", "shape": "llama-1b S=2048"},
    ]
for row in gpu_check.table(results):
    print(" | ".join(row))
