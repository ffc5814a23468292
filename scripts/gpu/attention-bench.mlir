// Causal bf16 attention forward for the GPU check (scripts/gpu-prepare.sh
// compiles it with --target=sm_90a --hopper-attention --emit=ptx;
// docs/gpu-check.md, docs/hopper-attention.md): one sequence, 32 heads of
// 128, as many kv heads (the shape torch_bench.py times
// scaled_dot_product_attention on in the same run), scale 1/sqrt(128).

func.func @attn_4096(%q: tensor<4096x4096xbf16>, %k: tensor<1x4096x4096xbf16>,
                     %v: tensor<1x4096x4096xbf16>) -> tensor<4096x4096xbf16> {
  %pos = colossus.positions 4096
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 32 : i64, scale = 0.08838834764831845 : f64} : tensor<4096x4096xbf16>, tensor<1x4096x4096xbf16>, tensor<1x4096x4096xbf16>, tensor<4096xi32>
  return %0 : tensor<4096x4096xbf16>
}

func.func @attn_16384(%q: tensor<16384x4096xbf16>, %k: tensor<1x16384x4096xbf16>,
                      %v: tensor<1x16384x4096xbf16>) -> tensor<16384x4096xbf16> {
  %pos = colossus.positions 16384
  %0 = colossus.attention %q, %k, %v, %pos {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 32 : i64, scale = 0.08838834764831845 : f64} : tensor<16384x4096xbf16>, tensor<1x16384x4096xbf16>, tensor<1x16384x4096xbf16>, tensor<16384xi32>
  return %0 : tensor<16384x4096xbf16>
}

// The backward of the same shapes: attention_grad's dq group becomes the
// Hopper dQ kernel (`*_0_attention_grad`), its dk/dv group the dK/dV kernel
// (`*_1_attention_grad`).
func.func @attn_bwd_4096(%q: tensor<4096x4096xbf16>, %k: tensor<1x4096x4096xbf16>,
                         %v: tensor<1x4096x4096xbf16>, %do: tensor<4096x4096xbf16>,
                         %o: tensor<4096x4096xbf16>, %lse: tensor<4096x32xf32>)
    -> (tensor<4096x4096xf32>, tensor<1x4096x4096xf32>, tensor<1x4096x4096xf32>) {
  %pos = colossus.positions 4096
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 32 : i64, scale = 0.08838834764831845 : f64} : tensor<4096x4096xbf16>, tensor<1x4096x4096xbf16>, tensor<4096xi32>, tensor<4096x32xf32>
  return %dq, %dk, %dv : tensor<4096x4096xf32>, tensor<1x4096x4096xf32>, tensor<1x4096x4096xf32>
}

func.func @attn_bwd_16384(%q: tensor<16384x4096xbf16>, %k: tensor<1x16384x4096xbf16>,
                          %v: tensor<1x16384x4096xbf16>, %do: tensor<16384x4096xbf16>,
                          %o: tensor<16384x4096xbf16>, %lse: tensor<16384x32xf32>)
    -> (tensor<16384x4096xf32>, tensor<1x16384x4096xf32>, tensor<1x16384x4096xf32>) {
  %pos = colossus.positions 16384
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 128 : i64, num_heads = 32 : i64, num_kv_heads = 32 : i64, scale = 0.08838834764831845 : f64} : tensor<16384x4096xbf16>, tensor<1x16384x4096xbf16>, tensor<16384xi32>, tensor<16384x32xf32>
  return %dq, %dk, %dv : tensor<16384x4096xf32>, tensor<1x16384x4096xf32>, tensor<1x16384x4096xf32>
}

// The backward of llama-1b's attention (bench/llama-1b.json: 32 heads of
// 64, 8 kv heads, one sequence of 2048, causal), timed under the default
// and the v3 schedule (--hopper-attention-bwd=v3; docs/hopper-attention.md).
func.func @attn_bwd_llama1b(%q: tensor<2048x2048xbf16>, %k: tensor<1x2048x512xbf16>,
                            %v: tensor<1x2048x512xbf16>, %do: tensor<2048x2048xbf16>,
                            %o: tensor<2048x2048xbf16>, %lse: tensor<2048x32xf32>)
    -> (tensor<2048x2048xf32>, tensor<1x2048x512xf32>, tensor<1x2048x512xf32>) {
  %pos = colossus.positions 2048
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 64 : i64, num_heads = 32 : i64, num_kv_heads = 8 : i64, scale = 0.125 : f64} : tensor<2048x2048xbf16>, tensor<1x2048x512xbf16>, tensor<2048xi32>, tensor<2048x32xf32>
  return %dq, %dk, %dv : tensor<2048x2048xf32>, tensor<1x2048x512xf32>, tensor<1x2048x512xf32>
}
