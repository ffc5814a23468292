// The sm_90a reductions of docs/kernels.md "Reductions": global_norm (two
// kernels over per-block partial sums) and embedding_grad (warp ballots
// over the token ids).
func.func @gnorm(%h: tensor<5xf32>, %a: tensor<65536x1024xf32>,
                 %b: tensor<7xf32>) -> tensor<1xf32> {
  %n = colossus.global_norm %h, %a, %b : tensor<5xf32>, tensor<65536x1024xf32>, tensor<7xf32>
  return %n : tensor<1xf32>
}

// 64 chunks of 4 f32 per vocabulary row: a warp shares one row.
func.func @emb_wide(%ids: tensor<64xi32>, %dy: tensor<64x256xf32>) -> tensor<1000x256xf32> {
  %g = colossus.embedding_grad %ids, %dy {vocab_size = 1000 : i64} : tensor<64xi32>, tensor<64x256xf32>
  return %g : tensor<1000x256xf32>
}

// 8 chunks of 8 bf16 per row: a warp spans 4 vocabulary rows (4 ballots).
func.func @emb_narrow(%ids: tensor<64xi32>, %dy: tensor<64x64xbf16>) -> tensor<1000x64xf32> {
  %g = colossus.embedding_grad %ids, %dy {vocab_size = 1000 : i64} : tensor<64xi32>, tensor<64x64xbf16>
  return %g : tensor<1000x64xf32>
}

// 25 chunks per row (neither divides nor is a multiple of 32): the thread
// per output element of before.
func.func @emb_odd(%ids: tensor<64xi32>, %dy: tensor<64x100xf32>) -> tensor<1000x100xf32> {
  %g = colossus.embedding_grad %ids, %dy {vocab_size = 1000 : i64} : tensor<64xi32>, tensor<64x100xf32>
  return %g : tensor<1000x100xf32>
}
