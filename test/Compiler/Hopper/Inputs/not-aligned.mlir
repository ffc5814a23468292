// M = 100 rows: no tile divides it, so the bf16 GEMM does not apply and the
// SIMT path refuses bf16.
func.func @ragged(%x: tensor<100x128xbf16>, %w: tensor<128x128xbf16>)
    -> tensor<100x128xbf16> {
  %0 = colossus.linear %x, %w : tensor<100x128xbf16>, tensor<128x128xbf16>
  return %0 : tensor<100x128xbf16>
}
