//===- colossus-compile.cpp - The Colossus compiler driver ----------------===//
#include "colossus/Compiler/Compile.h"

int main(int argc, char **argv) { return colossus::compileMain(argc, argv); }
