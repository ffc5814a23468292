// GEMM variants of the sm_90a TMA + wgmma kernel (docs/hopper-gemm.md):
// operand layouts, summed products, weight gradients, fused epilogues.

// Backward data GEMM: dX = dY * W with W [N, K] read as the [K, N] weight
// of a transpose_w = false linear (B N-contiguous: imm-trans-b = 1).
// 2048 x 2048: 128x128 tiles, two 64-column boxes per B tile.
func.func @dgrad(%dy: tensor<2048x512xbf16>, %w: tensor<512x2048xbf16>)
    -> tensor<2048x2048xbf16> {
  %0 = colossus.linear %dy, %w {transpose_w = false} : tensor<2048x512xbf16>, tensor<512x2048xbf16>
  return %0 : tensor<2048x2048xbf16>
}

// The Llama MLP's input gradient: dgate * Wg + dup * Wu, one accumulator
// over both K ranges (4 tensor maps).
func.func @dgrad_sum(%dg: tensor<512x1024xbf16>, %wg: tensor<1024x256xbf16>,
                     %du: tensor<512x1024xbf16>, %wu: tensor<1024x256xbf16>)
    -> tensor<512x256xbf16> {
  %0 = colossus.linear %dg, %wg {transpose_w = false} : tensor<512x1024xbf16>, tensor<1024x256xbf16>
  %1 = colossus.linear %du, %wu {transpose_w = false} : tensor<512x1024xbf16>, tensor<1024x256xbf16>
  %2 = colossus.add %0, %1 : tensor<512x256xbf16>
  return %2 : tensor<512x256xbf16>
}

// The attention input gradient: dq * Wq + dk * Wk + dv * Wv (K = 256, 128,
// 128).
func.func @dgrad_qkv(%dq: tensor<512x256xbf16>, %wq: tensor<256x256xbf16>,
                     %dk: tensor<512x128xbf16>, %wk: tensor<128x256xbf16>,
                     %dv: tensor<512x128xbf16>, %wv: tensor<128x256xbf16>)
    -> tensor<512x256xbf16> {
  %0 = colossus.linear %dq, %wq {transpose_w = false} : tensor<512x256xbf16>, tensor<256x256xbf16>
  %1 = colossus.linear %dk, %wk {transpose_w = false} : tensor<512x128xbf16>, tensor<128x256xbf16>
  %2 = colossus.add %0, %1 : tensor<512x256xbf16>
  %3 = colossus.linear %dv, %wv {transpose_w = false} : tensor<512x128xbf16>, tensor<128x256xbf16>
  %4 = colossus.add %2, %3 : tensor<512x256xbf16>
  return %4 : tensor<512x256xbf16>
}

// Weight gradient dW [N, K] = dY^T [N, T] * X [T, K]: both operands
// token-contiguous (imm-trans-a = imm-trans-b = 1), f32, accumulated into
// the gradient buffer (colossus.param).
func.func @wgrad(%x: tensor<1024x256xbf16>, %dy: tensor<1024x768xbf16>)
    -> (tensor<768x256xf32> {colossus.param = "w"}) {
  %0 = colossus.linear_weight_grad %x, %dy : tensor<1024x256xbf16>, tensor<1024x768xbf16>
  return %0 : tensor<768x256xf32>
}

// GPT-2 (Conv1D) weight gradient dW [K, N] = X^T * dY, stored, not
// accumulated.
func.func @wgrad_kn(%x: tensor<512x128xbf16>, %dy: tensor<512x256xbf16>)
    -> tensor<128x256xf32> {
  %0 = colossus.linear_weight_grad %x, %dy {transpose_w = false} : tensor<512x128xbf16>, tensor<512x256xbf16>
  return %0 : tensor<128x256xf32>
}

// GPT-2's MLP up-projection: x * W + b, GELU (tanh); the train step also
// keeps the pre-activation.
func.func @bias_gelu(%x: tensor<512x256xbf16>, %w: tensor<256x1024xbf16>,
                     %b: tensor<1024xbf16>)
    -> (tensor<512x1024xbf16>, tensor<512x1024xbf16>) {
  %0 = colossus.linear %x, %w bias %b {transpose_w = false} : tensor<512x256xbf16>, tensor<256x1024xbf16>, tensor<1024xbf16>
  %1 = colossus.gelu %0 {approximate = #colossus<gelu_approx tanh>} : tensor<512x1024xbf16>
  return %0, %1 : tensor<512x1024xbf16>, tensor<512x1024xbf16>
}

// GELU (erf) without bias, one output.
func.func @gelu_erf(%x: tensor<512x256xbf16>, %w: tensor<1024x256xbf16>)
    -> tensor<512x1024xbf16> {
  %0 = colossus.linear %x, %w : tensor<512x256xbf16>, tensor<1024x256xbf16>
  %1 = colossus.gelu %0 : tensor<512x1024xbf16>
  return %1 : tensor<512x1024xbf16>
}

// The Llama MLP's gate and up projections in one dual GEMM (two B
// operands, two accumulators) with the swiglu epilogue; the train step
// also keeps gate and up.
func.func @swiglu(%x: tensor<512x256xbf16>, %wg: tensor<1024x256xbf16>,
                  %wu: tensor<1024x256xbf16>)
    -> (tensor<512x1024xbf16>, tensor<512x1024xbf16>, tensor<512x1024xbf16>) {
  %0 = colossus.linear %x, %wg : tensor<512x256xbf16>, tensor<1024x256xbf16>
  %1 = colossus.linear %x, %wu : tensor<512x256xbf16>, tensor<1024x256xbf16>
  %2 = colossus.swiglu %0, %1 : tensor<512x1024xbf16>
  return %0, %1, %2 : tensor<512x1024xbf16>, tensor<512x1024xbf16>, tensor<512x1024xbf16>
}

// The down projection's input gradient with the swiglu_grad epilogue:
// dh = dY * Wd, then dgate and dup from gate and up.
func.func @swiglu_grad(%dy: tensor<512x256xbf16>, %wd: tensor<256x1024xbf16>,
                       %g: tensor<512x1024xbf16>, %u: tensor<512x1024xbf16>)
    -> (tensor<512x1024xbf16>, tensor<512x1024xbf16>) {
  %0 = colossus.linear %dy, %wd {transpose_w = false} : tensor<512x256xbf16>, tensor<256x1024xbf16>
  %dg, %du = colossus.swiglu_grad %g, %u, %0 : tensor<512x1024xbf16>
  return %dg, %du : tensor<512x1024xbf16>, tensor<512x1024xbf16>
}
