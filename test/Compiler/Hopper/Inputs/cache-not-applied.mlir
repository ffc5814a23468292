// KV cache writes the Hopper GEMM does not take (a SIMT kernel each).

// Positions that are a group input, not colossus.positions: the kernel
// re-materializes positions only as pos0 + r % nt.
func.func @given_positions(%x: tensor<128x64xbf16>, %w: tensor<64x64xbf16>,
                           %pos: tensor<128xi32>,
                           %cache: tensor<1x128x64xbf16>)
    -> tensor<1x128x64xbf16> {
  %0 = colossus.linear %x, %w : tensor<128x64xbf16>, tensor<64x64xbf16>
  %1 = colossus.cache_write %cache[%pos], %0 : tensor<1x128x64xbf16>, tensor<128x64xbf16>, tensor<128xi32>
  return %1 : tensor<1x128x64xbf16>
}
