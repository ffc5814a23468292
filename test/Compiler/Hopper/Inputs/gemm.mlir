// bf16 GEMM groups for the sm_90a TMA + wgmma kernel (docs/hopper-gemm.md).

// A Llama-3-8B o-projection over 8192 tokens: x @ W^T + residual, bf16 out.
func.func @o_proj(%x: tensor<8192x4096xbf16>, %w: tensor<4096x4096xbf16>,
                  %res: tensor<8192x4096xbf16>) -> tensor<8192x4096xbf16> {
  %0 = colossus.linear %x, %w : tensor<8192x4096xbf16>, tensor<4096x4096xbf16>
  %1 = colossus.add %0, %res : tensor<8192x4096xbf16>
  return %1 : tensor<8192x4096xbf16>
}

// With a bias and a residual.
func.func @bias_res(%x: tensor<1024x512xbf16>, %w: tensor<768x512xbf16>,
                    %b: tensor<768xbf16>, %res: tensor<1024x768xbf16>)
    -> tensor<1024x768xbf16> {
  %0 = colossus.linear %x, %w bias %b : tensor<1024x512xbf16>, tensor<768x512xbf16>, tensor<768xbf16>
  %1 = colossus.add %res, %0 : tensor<1024x768xbf16>
  return %1 : tensor<1024x768xbf16>
}

// A plain GEMM (no epilogue) of a small problem: more, smaller tiles.
func.func @small(%x: tensor<256x192xbf16>, %w: tensor<256x192xbf16>)
    -> tensor<256x256xbf16> {
  %0 = colossus.linear %x, %w : tensor<256x192xbf16>, tensor<256x192xbf16>
  return %0 : tensor<256x256xbf16>
}
