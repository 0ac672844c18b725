# Included by llama.cpp's project() call (CMAKE_PROJECT_llama.cpp_INCLUDE_BEFORE), after
# llama-cpp-python has forced LLAMA_BUILD_COMMON on. The Python bindings only load libllama and
# libggml*; llama-common (51 files: chat parsers, json, http) is for llama.cpp's own tools and
# takes a large share of a single-variant build. Used by the cpu-host preset to build in minutes.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library (not used by the bindings)" FORCE)
