"""Imported by Python at start-up when caption/vllm/tv_guard_site is on PYTHONPATH (see caption.vllm.tv_guard).

It only registers an import hook; torch is not imported unless torchvision is.
"""

from caption.vllm import tv_guard

tv_guard.install_import_hook()
