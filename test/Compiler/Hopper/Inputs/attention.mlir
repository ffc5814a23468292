// Attention groups for the sm_90a TMA + wgmma kernel
// (docs/hopper-attention.md).

// Llama-3-8B shaped: 32 heads, 8 kv heads (GQA, group 4), head_dim 128,
// one sequence of 4096 tokens, causal.
func.func @llama_h128(%q: tensor<4096x4096xbf16>, %k: tensor<1x4096x1024xbf16>,
                      %v: tensor<1x4096x1024xbf16>) -> tensor<4096x4096xbf16> {
  %pos = colossus.positions 4096
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.08838834764831845 : f64} : tensor<4096x4096xbf16>, tensor<1x4096x1024xbf16>, tensor<1x4096x1024xbf16>, tensor<4096xi32>
  return %0 : tensor<4096x4096xbf16>
}

// head_dim 64, two sequences of 512, the row statistics saved (training).
func.func @train_h64(%q: tensor<1024x512xbf16>, %k: tensor<2x512x256xbf16>,
                     %v: tensor<2x512x256xbf16>) -> (tensor<1024x512xbf16>, tensor<1024x8xf32>) {
  %pos = colossus.positions 1024
  %0, %lse = colossus.attention %q, %k, %v, %pos {head_dim = 64 : i64, num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.125 : f64, save_lse} : tensor<1024x512xbf16>, tensor<2x512x256xbf16>, tensor<2x512x256xbf16>, tensor<1024xi32>
  return %0, %lse : tensor<1024x512xbf16>, tensor<1024x8xf32>
}

// The same heads at seq 16384, not causal.
func.func @full_h128_16k(%q: tensor<16384x4096xbf16>, %k: tensor<1x16384x1024xbf16>,
                         %v: tensor<1x16384x1024xbf16>) -> tensor<16384x4096xbf16> {
  %pos = colossus.positions 16384
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.08838834764831845 : f64, causal = false} : tensor<16384x4096xbf16>, tensor<1x16384x1024xbf16>, tensor<1x16384x1024xbf16>, tensor<16384xi32>
  return %0 : tensor<16384x4096xbf16>
}

// Causal at seq 16384.
func.func @causal_h128_16k(%q: tensor<16384x4096xbf16>, %k: tensor<1x16384x1024xbf16>,
                           %v: tensor<1x16384x1024xbf16>) -> tensor<16384x4096xbf16> {
  %pos = colossus.positions 16384
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.08838834764831845 : f64} : tensor<16384x4096xbf16>, tensor<1x16384x1024xbf16>, tensor<1x16384x1024xbf16>, tensor<16384xi32>
  return %0 : tensor<16384x4096xbf16>
}
