// attention_grad groups the Hopper backward does not take: head_dim 32;
// a sliding window.
func.func @bwd_h32(%q: tensor<256x128xbf16>, %k: tensor<1x256x128xbf16>,
                   %v: tensor<1x256x128xbf16>, %do: tensor<256x128xbf16>,
                   %o: tensor<256x128xbf16>, %lse: tensor<256x4xf32>)
    -> (tensor<256x128xf32>, tensor<1x256x128xf32>, tensor<1x256x128xf32>) {
  %pos = colossus.positions 256
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 32 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.17677669529663687 : f64} : tensor<256x128xbf16>, tensor<1x256x128xbf16>, tensor<256xi32>, tensor<256x4xf32>
  return %dq, %dk, %dv : tensor<256x128xf32>, tensor<1x256x128xf32>, tensor<1x256x128xf32>
}

func.func @bwd_window(%q: tensor<256x256xbf16>, %k: tensor<1x256x256xbf16>,
                      %v: tensor<1x256x256xbf16>, %do: tensor<256x256xbf16>,
                      %o: tensor<256x256xbf16>, %lse: tensor<256x4xf32>)
    -> (tensor<256x256xf32>, tensor<1x256x256xf32>, tensor<1x256x256xf32>) {
  %pos = colossus.positions 256
  %dq, %dk, %dv = colossus.attention_grad %q, %k, %v, %pos, %do, %o, %lse {head_dim = 64 : i64, num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.125 : f64, sliding_window = 64 : i64} : tensor<256x256xbf16>, tensor<1x256x256xbf16>, tensor<256xi32>, tensor<256x4xf32>
  return %dq, %dk, %dv : tensor<256x256xf32>, tensor<1x256x256xf32>, tensor<1x256x256xf32>
}
