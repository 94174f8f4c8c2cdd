"""The separate vLLM environment and what runs in it: its builds (env_cpu.sh, env_cuda.sh with the
pins of pins.py and cuda.lock), the torchvision guard (tv_guard), the tiny test model (tiny_model), the
server launcher (serve), and the main environment's side of it (runtime: find the env, run a server).

Imported as `caption.vllm`: every `import vllm` in the project is absolute and gets the real library,
as long as no `caption/` folder itself is put on sys.path (nothing here does).
"""
