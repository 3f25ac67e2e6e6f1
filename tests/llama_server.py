"""`python -m llama_cpp.server` for the tests, loading models as ttc's engine does on this CPU (plain CPU buffers
where llama.cpp would use AMX: ttc.engine.llama.buffers), so that its answers can be compared with the engine's."""

import runpy

import llama_cpp

from ttc.engine.llama.buffers import install_plain_cpu_buffers

if __name__ == "__main__":
    install_plain_cpu_buffers(llama_cpp)
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
