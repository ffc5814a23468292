// Row kernels for the sm_90a vector-access check (vector-rows-sm90a.test).

// Llama-3-8B-wide rows (4096 bf16: 512 chunks, more than a warp's 32 lanes
// keep in registers): a block of 128 threads per row, 4 chunks per lane.
func.func @wide_rms(%x: tensor<64x4096xbf16>, %w: tensor<4096xbf16>)
    -> tensor<64x4096xbf16> {
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<64x4096xbf16>, tensor<4096xbf16>
  return %0 : tensor<64x4096xbf16>
}
// Llama-3-70B-wide rows (8192 bf16: 8 chunks per lane of a 128-thread
// block), and the dx of rms_norm_grad at both widths.
func.func @wide70_rms(%x: tensor<64x8192xbf16>, %w: tensor<8192xbf16>)
    -> tensor<64x8192xbf16> {
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<64x8192xbf16>, tensor<8192xbf16>
  return %0 : tensor<64x8192xbf16>
}
func.func @wide_dx(%x: tensor<64x4096xbf16>, %w: tensor<4096xbf16>, %dy: tensor<64x4096xbf16>)
    -> tensor<64x4096xbf16> {
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<64x4096xbf16>, tensor<4096xbf16>
  return %0#0 : tensor<64x4096xbf16>
}
func.func @wide70_dx(%x: tensor<64x8192xbf16>, %w: tensor<8192xbf16>, %dy: tensor<64x8192xbf16>)
    -> tensor<64x8192xbf16> {
  %0:2 = colossus.rms_norm_grad %x, %w, %dy eps = 1.0e-05 : tensor<64x8192xbf16>, tensor<8192xbf16>
  return %0#0 : tensor<64x8192xbf16>
}

// layer_norm (mean, then the centered sum of squares) and softmax (max,
// then the sum of exponentials) over rows of 1024 f32: 256 chunks, 32
// lanes of 8 chunks (32 elements per lane): in registers.
func.func @ln(%x: tensor<64x1024xf32>, %w: tensor<1024xf32>, %b: tensor<1024xf32>)
    -> tensor<64x1024xf32> {
  %0 = colossus.layer_norm %x, %w, %b eps = 1.0e-05 : tensor<64x1024xf32>, tensor<1024xf32>, tensor<1024xf32>
  return %0 : tensor<64x1024xf32>
}
func.func @sm(%x: tensor<64x1024xf32>) -> tensor<64x1024xf32> {
  %0 = colossus.softmax %x : tensor<64x1024xf32>
  return %0 : tensor<64x1024xf32>
}

// The loss and its gradient over a 32000-token vocabulary: cross_entropy_rows
// (two passes over the logits row: its log-sum-exp, then dlogits) and
// row_sum.
func.func @loss(%lg: tensor<64x32000xf32>, %tg: tensor<64xi32>, %dl: tensor<f32>)
    -> (tensor<f32>, tensor<64x32000xf32>) {
  %0 = colossus.cross_entropy %lg, %tg : tensor<64x32000xf32>, tensor<64xi32>
  %1 = colossus.cross_entropy_grad %lg, %tg, %dl : tensor<64x32000xf32>, tensor<64xi32>, tensor<f32>
  return %0, %1 : tensor<f32>, tensor<64x32000xf32>
}

// A row length that is no multiple of 8 bf16: the scalar form stays.
func.func @odd(%x: tensor<16x100xbf16>, %w: tensor<100xbf16>)
    -> tensor<16x100xbf16> {
  %0 = colossus.rms_norm %x, %w eps = 1.0e-05 : tensor<16x100xbf16>, tensor<100xbf16>
  return %0 : tensor<16x100xbf16>
}
