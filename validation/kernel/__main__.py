"""python -m validation.kernel: the real-kernel validation (make validate-kernel)."""

from __future__ import annotations

import sys

from .run import main

sys.exit(main())
