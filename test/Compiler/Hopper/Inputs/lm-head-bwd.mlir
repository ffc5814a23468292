// The output projection's backward of a bf16 train step at Llama-3.2-1B's
// shapes (bench/llama-1b.json: vocab 128256, hidden 2048, tied embeddings;
// batch 1 x 2048), as autodiff writes it with --precision=bf16: the f32
// loss gradient of the f32 logits is rounded to bf16 (the convert rule),
// then dX = dlogits W (transpose_w = false: W [V, D] read N-contiguous) and
// dW = dlogits^T h (both operands token-contiguous, f32). With tied
// embeddings dW is added by the embedding's gradient kernel (embedding_grad
// plus dW), so it is stored, not accumulated (no colossus.param on the
// result).
func.func @lm_head_bwd(%logits: tensor<2048x128256xf32>, %t: tensor<2048xi32>,
                       %h: tensor<2048x2048xbf16>, %w: tensor<128256x2048xbf16>)
    -> (tensor<f32>, tensor<2048x2048xbf16>,
        tensor<128256x2048xf32>) {
  %l = colossus.cross_entropy %logits, %t : tensor<2048x128256xf32>, tensor<2048xi32>
  %one = arith.constant dense<1.0> : tensor<f32>
  %g = colossus.cross_entropy_grad %logits, %t, %one : tensor<2048x128256xf32>, tensor<2048xi32>, tensor<f32>
  %gb = colossus.convert %g to bf16 : tensor<2048x128256xf32>
  %dh = colossus.linear %gb, %w {transpose_w = false} : tensor<2048x128256xbf16>, tensor<128256x2048xbf16>
  %dw = colossus.linear_weight_grad %h, %gb : tensor<2048x2048xbf16>, tensor<2048x128256xbf16>
  return %l, %dh, %dw : tensor<f32>, tensor<2048x2048xbf16>, tensor<128256x2048xf32>
}
