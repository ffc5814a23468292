// Square bf16 GEMMs for the GPU check (scripts/gpu-prepare.sh compiles them
// with --target=sm_90a --hopper-gemm --emit=ptx; docs/gpu-check.md):
// C = x @ W^T, bf16 in and out, f32 accumulation, no epilogue. The same
// shapes are timed with torch.nn.functional.linear (cuBLAS) in the same run.

func.func @gemm_4096(%x: tensor<4096x4096xbf16>, %w: tensor<4096x4096xbf16>)
    -> tensor<4096x4096xbf16> {
  %0 = colossus.linear %x, %w : tensor<4096x4096xbf16>, tensor<4096x4096xbf16>
  return %0 : tensor<4096x4096xbf16>
}

func.func @gemm_8192(%x: tensor<8192x8192xbf16>, %w: tensor<8192x8192xbf16>)
    -> tensor<8192x8192xbf16> {
  %0 = colossus.linear %x, %w : tensor<8192x8192xbf16>, tensor<8192x8192xbf16>
  return %0 : tensor<8192x8192xbf16>
}
