"""Validation of s2teardown's counts against real Linux kernels running KVM under QEMU.

`make validate-kernel` runs `python -m validation.kernel`; docs/validation.md describes the
method, the matrix and the known differences.
"""
