func.func @f(%h: tensor<5xf32>, %a: tensor<6x5xf32>, %b: tensor<7xf32>) -> (tensor<1xf32>) {
  %r = colossus.global_norm %h, %a, %b : tensor<5xf32>, tensor<6x5xf32>, tensor<7xf32>
  return %r : tensor<1xf32>
}
