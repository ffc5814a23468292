// The untied lm head's weight gradient of a bf16 train step (Llama-3-8B:
// vocab 128256, hidden 4096; and hidden 2048): dW = dlogits^T h over 2048
// tokens, accumulated into the f32 gradient buffer (colossus.param). With
// 128x256 tiles it has 128256 / 128 = 1002 tile rows: 125 groups of 8 and a
// last group of 2 (docs/hopper-gemm.md "Weight gradients").
func.func @lm_dw_2048(%h: tensor<2048x2048xbf16>, %g: tensor<2048x128256xbf16>)
    -> (tensor<128256x2048xf32> {colossus.param = "lm_head.weight"}) {
  %dw = colossus.linear_weight_grad %h, %g : tensor<2048x2048xbf16>, tensor<2048x128256xbf16>
  return %dw : tensor<128256x2048xf32>
}

func.func @lm_dw_4096(%h: tensor<2048x4096xbf16>, %g: tensor<2048x128256xbf16>)
    -> (tensor<128256x4096xf32> {colossus.param = "lm_head.weight"}) {
  %dw = colossus.linear_weight_grad %h, %g : tensor<2048x4096xbf16>, tensor<2048x128256xbf16>
  return %dw : tensor<128256x4096xf32>
}
