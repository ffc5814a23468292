// Every training op with a kernel, for the sm_90a assembly check (the
// standalone loss and loss gradient differ in ignore_index, so they are not
// fused; %14/%15 are, into cross_entropy_rows and row_sum).
func.func @f(%x: tensor<12x16xf32>, %w: tensor<16xf32>, %dy: tensor<12x16xf32>,
             %lg: tensor<12x20xf32>, %tg: tensor<12xi32>, %dl: tensor<f32>,
             %dn: tensor<12x24xf32>, %ids: tensor<12xi32>,
             %c: tensor<2x9x16xf32>, %p: tensor<12xi32>, %q: tensor<12x32xf32>,
             %lse: tensor<12x4xf32>)
    -> (tensor<12x16xf32>, tensor<16xf32>, tensor<12x16xf32>, tensor<16xf32>, tensor<16xf32>,
        tensor<12x16xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<12x16xf32>,
        tensor<12x16xf32>, tensor<f32>, tensor<12x20xf32>, tensor<24x16xf32>,
        tensor<24xf32>, tensor<20x16xf32>, tensor<12x40xf32>, tensor<12x16xf32>,
        tensor<12x32xf32>, tensor<2x9x16xf32>, tensor<2x9x16xf32>,
        tensor<f32>, tensor<12x16xf32>, tensor<12x32xf32>, tensor<12x4xf32>) {
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<12x16xf32>, tensor<16xf32>
  %1:3 = colossus.layer_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<12x16xf32>, tensor<16xf32>
  %2 = colossus.silu_grad %x, %dy : tensor<12x16xf32>
  %3 = colossus.gelu_grad %x, %dy {approximate = #colossus<gelu_approx tanh>} : tensor<12x16xf32>
  %4:2 = colossus.swiglu_grad %x, %dy, %dy : tensor<12x16xf32>
  %5 = colossus.softmax_grad %x, %dy : tensor<12x16xf32>
  %6 = colossus.cross_entropy %lg, %tg : tensor<12x20xf32>, tensor<12xi32>
  %7 = colossus.cross_entropy_grad %lg, %tg, %dl {ignore_index = 0 : i64} : tensor<12x20xf32>, tensor<12xi32>, tensor<f32>
  %8 = colossus.linear_weight_grad %x, %dn : tensor<12x16xf32>, tensor<12x24xf32>
  %9 = colossus.column_sum %dn : tensor<12x24xf32>
  %10 = colossus.embedding_grad %ids, %dy {vocab_size = 20 : i64} : tensor<12xi32>, tensor<12x16xf32>
  %11 = colossus.pad_columns %x[8, 40] : tensor<12x16xf32>
  %12 = colossus.cache_read %c[%p] : tensor<2x9x16xf32>, tensor<12xi32>
  %13:3 = colossus.attention_grad %q, %c, %c, %p, %q, %q, %lse {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64} : tensor<12x32xf32>, tensor<2x9x16xf32>, tensor<12xi32>, tensor<12x4xf32>
  // The loss and its gradient of the same logits: cross_entropy_rows, row_sum.
  %14 = colossus.cross_entropy %dy, %tg : tensor<12x16xf32>, tensor<12xi32>
  %15 = colossus.cross_entropy_grad %dy, %tg, %dl : tensor<12x16xf32>, tensor<12xi32>, tensor<f32>
  %16:2 = colossus.attention %q, %c, %c, %p {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64, save_lse} : tensor<12x32xf32>, tensor<2x9x16xf32>, tensor<2x9x16xf32>, tensor<12xi32>
  return %0#0, %0#1, %1#0, %1#1, %1#2, %2, %3, %4#0, %4#1, %5, %6, %7, %8, %9, %10, %11, %12, %13#0, %13#1, %13#2, %14, %15, %16#0, %16#1
    : tensor<12x16xf32>, tensor<16xf32>, tensor<12x16xf32>, tensor<16xf32>, tensor<16xf32>,
      tensor<12x16xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<12x16xf32>,
      tensor<12x16xf32>, tensor<f32>, tensor<12x20xf32>, tensor<24x16xf32>,
      tensor<24xf32>, tensor<20x16xf32>, tensor<12x40xf32>, tensor<12x16xf32>,
      tensor<12x32xf32>, tensor<2x9x16xf32>, tensor<2x9x16xf32>,
      tensor<f32>, tensor<12x16xf32>, tensor<12x32xf32>, tensor<12x4xf32>
}
