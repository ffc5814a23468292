// Groups the Hopper GEMM variants do not take (a SIMT kernel each).

// A product whose K (the kv width 32) is not a multiple of 64.
func.func @narrow_k(%dq: tensor<128x64xbf16>, %wq: tensor<64x64xbf16>,
                    %dk: tensor<128x32xbf16>, %wk: tensor<32x64xbf16>)
    -> tensor<128x64xbf16> {
  %0 = colossus.linear %dq, %wq {transpose_w = false} : tensor<128x64xbf16>, tensor<64x64xbf16>
  %1 = colossus.linear %dk, %wk {transpose_w = false} : tensor<128x32xbf16>, tensor<32x64xbf16>
  %2 = colossus.add %0, %1 : tensor<128x64xbf16>
  return %2 : tensor<128x64xbf16>
}

// A weight gradient from an f32 upstream gradient (the lm head's).
func.func @f32_dy(%x: tensor<128x64xbf16>, %dy: tensor<128x256xf32>)
    -> tensor<256x64xf32> {
  %0 = colossus.linear_weight_grad %x, %dy : tensor<128x64xbf16>, tensor<128x256xf32>
  return %0 : tensor<256x64xf32>
}

// x is both the GEMM's A (a tensor map) and the residual.
func.func @self_residual(%x: tensor<128x64xbf16>, %w: tensor<64x64xbf16>)
    -> tensor<128x64xbf16> {
  %0 = colossus.linear %x, %w : tensor<128x64xbf16>, tensor<64x64xbf16>
  %1 = colossus.add %0, %x : tensor<128x64xbf16>
  return %1 : tensor<128x64xbf16>
}
