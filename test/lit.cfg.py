import os
import lit.formats

config.name = "Colossus"
config.test_format = lit.formats.ShTest(not lit_config.useValgrind)
config.suffixes = [".mlir", ".test", ".json"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py",
                   "runtime"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.colossus_obj_root, "test")

tools = config.colossus_tools_dir
config.substitutions.append(("%colossus-opt", os.path.join(tools, "colossus-opt")))
config.substitutions.append(("%colossus-compile", os.path.join(tools, "colossus-compile")))
config.substitutions.append(("%colossus-run", os.path.join(tools, "colossus-run")))
config.substitutions.append(("%python", config.python))
config.substitutions.append(("%examples", os.path.join(config.colossus_src_root, "examples")))
config.substitutions.append(("%e2e", os.path.join(config.colossus_src_root, "test", "e2e")))
config.substitutions.append(("FileCheck", config.filecheck))
config.substitutions.append(("%not", config.not_tool))

config.environment["PATH"] = os.pathsep.join(
    [tools, os.path.dirname(config.filecheck), "/usr/local/cuda/bin",
     config.environment.get("PATH", os.environ.get("PATH", ""))])
# JAX on CPU only, quietly.
config.environment["JAX_PLATFORMS"] = "cpu"
config.environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "HOME"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

if config.build_compiler:
    config.available_features.add("compiler")
if config.ptxas and os.path.exists(config.ptxas):
    config.available_features.add("ptxas")
if os.path.exists(config.python):
    config.available_features.add("jax")

# nvdisasm from PyPI's nvidia-cuda-nvdisasm (scripts/requirements.txt), in
# the virtual environment next to config.python; or a CUDA toolkit's.
import glob
nvdisasm = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(config.python)), "lib", "python3*",
    "site-packages", "nvidia", "cu*", "bin", "nvdisasm")))
if not nvdisasm and os.path.exists("/usr/local/cuda/bin/nvdisasm"):
    nvdisasm = ["/usr/local/cuda/bin/nvdisasm"]
if nvdisasm:
    config.available_features.add("nvdisasm")
    config.substitutions.append(("%nvdisasm", nvdisasm[-1]))

# A machine with an NVIDIA driver (libcuda) can run sm_90a artifacts.
try:
    import ctypes
    ctypes.CDLL("libcuda.so.1")
    config.available_features.add("cuda-driver")
except OSError:
    pass

# nvcc (CUDA toolkit) builds the standalone GPU check programs of scripts/gpu.
import shutil
if shutil.which("nvcc", path=config.environment["PATH"]):
    config.available_features.add("nvcc")
