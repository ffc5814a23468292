//===- Compile.h - colossus-compile entry point -----------------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_COMPILE_H
#define COLOSSUS_COMPILER_COMPILE_H

namespace colossus {
/// The whole colossus-compile tool; returns the process exit code.
int compileMain(int argc, char **argv);
} // namespace colossus

#endif
