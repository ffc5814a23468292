// GEMMs whose rows are written into a KV cache (docs/hopper-gemm.md "KV
// cache writes"): the K/V projections of a layer without RoPE on them (the
// v projection of Llama), `colossus.cache_write` at `colossus.positions`.
// Row r of the product goes to cache[r / nt, pos0 + r % nt, :].

// Two sequences of capacity 1024: 64x64 tiles, one consumer warpgroup.
func.func @kv_cache(%x: tensor<1024x512xbf16>, %w: tensor<256x512xbf16>,
                    %cache: tensor<2x1024x256xbf16>)
    -> tensor<2x1024x256xbf16> {
  %pos = colossus.positions 1024
  %0 = colossus.linear %x, %w : tensor<1024x512xbf16>, tensor<256x512xbf16>
  %1 = colossus.cache_write %cache[%pos], %0 : tensor<2x1024x256xbf16>, tensor<1024x256xbf16>, tensor<1024xi32>
  return %1 : tensor<2x1024x256xbf16>
}

// A biased projection (Qwen-style k/v) whose pre-cache rows are also an
// output: two outputs, the cache and the [M, N] matrix.
func.func @kv_cache_bias(%x: tensor<512x256xbf16>, %w: tensor<128x256xbf16>,
                         %b: tensor<128xbf16>, %cache: tensor<4x256x128xbf16>)
    -> (tensor<4x256x128xbf16>, tensor<512x128xbf16>) {
  %pos = colossus.positions 512
  %0 = colossus.linear %x, %w bias %b : tensor<512x256xbf16>, tensor<128x256xbf16>, tensor<128xbf16>
  %1 = colossus.cache_write %cache[%pos], %0 : tensor<4x256x128xbf16>, tensor<512x128xbf16>, tensor<512xi32>
  return %1, %0 : tensor<4x256x128xbf16>, tensor<512x128xbf16>
}

// llama-1b's v projection (batch 1 x 2048 tokens, hidden 2048, 8 kv heads
// of 64): 2048 x 512 x 2048.
func.func @kv_llama(%x: tensor<2048x2048xbf16>, %w: tensor<512x2048xbf16>,
                    %cache: tensor<1x2048x512xbf16>)
    -> tensor<1x2048x512xbf16> {
  %pos = colossus.positions 2048
  %0 = colossus.linear %x, %w : tensor<2048x2048xbf16>, tensor<512x2048xbf16>
  %1 = colossus.cache_write %cache[%pos], %0 : tensor<1x2048x512xbf16>, tensor<2048x512xbf16>, tensor<2048xi32>
  return %1 : tensor<1x2048x512xbf16>
}
