// Attention groups the sm_90a TMA + wgmma kernel does not take: each gets a
// warning and the SIMT kernel.

// head_dim 32.
func.func @h32(%q: tensor<256x128xbf16>, %k: tensor<1x256x128xbf16>,
               %v: tensor<1x256x128xbf16>) -> tensor<256x128xbf16> {
  %pos = colossus.positions 256
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 32 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.17677669529663687 : f64} : tensor<256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<256xi32>
  return %0 : tensor<256x128xbf16>
}

// f32 operands.
func.func @f32(%q: tensor<256x128xf32>, %k: tensor<1x256x128xf32>,
               %v: tensor<1x256x128xf32>) -> tensor<256x128xf32> {
  %pos = colossus.positions 256
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 64 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.125 : f64} : tensor<256x128xf32>, tensor<1x256x128xf32>, tensor<1x256x128xf32>, tensor<256xi32>
  return %0 : tensor<256x128xf32>
}

// A sliding window.
func.func @window(%q: tensor<256x128xbf16>, %k: tensor<1x256x128xbf16>,
                  %v: tensor<1x256x128xbf16>) -> tensor<256x128xbf16> {
  %pos = colossus.positions 256
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 64 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.125 : f64, sliding_window = 64 : i64} : tensor<256x128xbf16>, tensor<1x256x128xbf16>, tensor<1x256x128xbf16>, tensor<256xi32>
  return %0 : tensor<256x128xbf16>
}

// A cache shorter than one K/V tile.
func.func @short(%q: tensor<128x128xbf16>, %k: tensor<2x64x128xbf16>,
                 %v: tensor<2x64x128xbf16>) -> tensor<128x128xbf16> {
  %pos = colossus.positions 128
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 64 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.125 : f64} : tensor<128x128xbf16>, tensor<2x64x128xbf16>, tensor<2x64x128xbf16>, tensor<128xi32>
  return %0 : tensor<128x128xbf16>
}
