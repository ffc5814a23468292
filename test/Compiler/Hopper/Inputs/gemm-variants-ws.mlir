// GEMM variants at sizes where the warp-specialized kernel runs two
// consumer warpgroups (bm = 128), docs/hopper-gemm.md.

// Weight gradient dW = dY^T X, 4096 x 4096 over 1024 tokens, accumulated
// into the f32 gradient: 128x256 tiles, two consumers of 64 rows; the
// token masking is shared by the 256 consumer threads (bar.sync 1, 256).
func.func @wgrad_ws(%x: tensor<1024x4096xbf16>, %dy: tensor<1024x4096xbf16>)
    -> (tensor<4096x4096xf32> {colossus.param = "w"}) {
  %0 = colossus.linear_weight_grad %x, %dy : tensor<1024x4096xbf16>, tensor<1024x4096xbf16>
  return %0 : tensor<4096x4096xf32>
}

// The dual GEMM gate/up + swiglu, 4096 tokens x 4096 x 1024: two
// accumulators per consumer thread must fit 128 registers together, so
// 128x128 tiles on two consumers (2 x 64x128 = 128 registers).
func.func @swiglu_ws(%x: tensor<4096x1024xbf16>, %wg: tensor<4096x1024xbf16>,
                     %wu: tensor<4096x1024xbf16>) -> tensor<4096x4096xbf16> {
  %0 = colossus.linear %x, %wg : tensor<4096x1024xbf16>, tensor<4096x1024xbf16>
  %1 = colossus.linear %x, %wu : tensor<4096x1024xbf16>, tensor<4096x1024xbf16>
  %2 = colossus.swiglu %0, %1 : tensor<4096x4096xbf16>
  return %2 : tensor<4096x4096xbf16>
}
