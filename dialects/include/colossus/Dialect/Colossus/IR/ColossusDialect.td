//===- ColossusDialect.td - Colossus dialect definition ----*- tablegen -*-===//
#ifndef COLOSSUS_DIALECT_TD
#define COLOSSUS_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def Colossus_Dialect : Dialect {
  let name = "colossus";
  let summary = "Tensor-level transformer ops for the Colossus compiler";
  let description = [{
    Ops on ranked tensors that describe transformer models at the level of
    their building blocks (embedding, norms, linear layers, RoPE, attention,
    activations). Tensors carry static *capacities*: a `[T, C]` activation
    has `T = batch * seq` rows, of which a step touches the active region
    (`nb` sequences of `nt` new tokens starting at position `pos0`); see
    docs/dialect.md.
  }];
  let cppNamespace = "::colossus";
  let useDefaultAttributePrinterParser = 1;
}

def Colossus_RopeLayout : I32EnumAttr<"RopeLayout", "RoPE element pairing", [
    I32EnumAttrCase<"rotate_half", 0>,
    I32EnumAttrCase<"interleaved", 1>]> {
  let cppNamespace = "::colossus";
  let genSpecializedAttr = 0;
}
def Colossus_RopeLayoutAttr : EnumAttr<Colossus_Dialect, Colossus_RopeLayout,
                                       "rope_layout">;

def Colossus_RopeScaling : I32EnumAttr<"RopeScaling", "RoPE frequency scaling", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"linear", 1>,
    I32EnumAttrCase<"llama3", 2>]> {
  let cppNamespace = "::colossus";
  let genSpecializedAttr = 0;
}
def Colossus_RopeScalingAttr : EnumAttr<Colossus_Dialect, Colossus_RopeScaling,
                                        "rope_scaling">;

def Colossus_GeluApprox : I32EnumAttr<"GeluApprox", "GELU formula", [
    I32EnumAttrCase<"erf", 0>,
    I32EnumAttrCase<"tanh", 1>]> {
  let cppNamespace = "::colossus";
  let genSpecializedAttr = 0;
}
def Colossus_GeluApproxAttr : EnumAttr<Colossus_Dialect, Colossus_GeluApprox,
                                       "gelu_approx">;

#endif // COLOSSUS_DIALECT_TD
