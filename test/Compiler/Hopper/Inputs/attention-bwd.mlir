// attention_grad groups for the sm_90a dK/dV kernel
// (docs/hopper-attention.md "Backward"). dq stays SIMT.

// Llama-3-8B shaped: 32 heads, 8 kv heads (GQA, group 4), head_dim 128,
// one sequence of 4096 tokens, causal.
func.func @bwd_h128(%q: tensor<4096x4096xbf16>, %k: tensor<1x4096x1024xbf16>,
                    %v: tensor<1x4096x1024xbf16>, %do: tensor<4096x4096xbf16>,
                    %o: tensor<4096x4096xbf16>, %lse: tensor<4096x32xf32>)
    -> (tensor<4096x4096xf32>, tensor<1x4096x1024xf32>, tensor<1x4096x1024xf32>) {
  %pos = colossus.positions 4096
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.08838834764831845 : f64} : tensor<4096x4096xbf16>, tensor<1x4096x1024xbf16>, tensor<4096xi32>, tensor<4096x32xf32>
  return %dq, %dk, %dv : tensor<4096x4096xf32>, tensor<1x4096x1024xf32>, tensor<1x4096x1024xf32>
}

// The same heads at seq 16384.
func.func @bwd_h128_16k(%q: tensor<16384x4096xbf16>, %k: tensor<1x16384x1024xbf16>,
                        %v: tensor<1x16384x1024xbf16>, %do: tensor<16384x4096xbf16>,
                        %o: tensor<16384x4096xbf16>, %lse: tensor<16384x32xf32>)
    -> (tensor<16384x4096xf32>, tensor<1x16384x1024xf32>, tensor<1x16384x1024xf32>) {
  %pos = colossus.positions 16384
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.08838834764831845 : f64} : tensor<16384x4096xbf16>, tensor<1x16384x1024xbf16>, tensor<16384xi32>, tensor<16384x32xf32>
  return %dq, %dk, %dv : tensor<16384x4096xf32>, tensor<1x16384x1024xf32>, tensor<1x16384x1024xf32>
}

// head_dim 64, two sequences of 512, not causal.
func.func @bwd_h64(%q: tensor<1024x512xbf16>, %k: tensor<2x512x256xbf16>,
                   %v: tensor<2x512x256xbf16>, %do: tensor<1024x512xbf16>,
                   %o: tensor<1024x512xbf16>, %lse: tensor<1024x8xf32>)
    -> (tensor<1024x512xf32>, tensor<2x512x256xf32>, tensor<2x512x256xf32>) {
  %pos = colossus.positions 1024
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 64 : i64, num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.125 : f64, causal = false} : tensor<1024x512xbf16>, tensor<2x512x256xbf16>, tensor<1024xi32>, tensor<1024x8xf32>
  return %dq, %dk, %dv : tensor<1024x512xf32>, tensor<2x512x256xf32>, tensor<2x512x256xf32>
}
