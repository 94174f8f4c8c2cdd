"""Imported by Python at start-up when caption/tv_guard_site is on PYTHONPATH (see caption.tv_guard).

It only registers an import hook; torch is not imported unless torchvision is.
"""

from caption import tv_guard

tv_guard.install_import_hook()
