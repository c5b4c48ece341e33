"""Logger factories used by ``conf/logger``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    """True when W&B credentials are available (``WANDB_API_KEY`` or a netrc entry from ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(*, offline: Optional[bool] = None, **kwargs: Any):
    """A ``WandbLogger``; ``offline=None`` means offline unless an API key is configured."""
    from pytorch_lightning.loggers import WandbLogger

    if offline is None:
        offline = not wandb_api_key_configured()
        if offline:
            log.info("no W&B API key configured: logging offline (sync later with `wandb sync`)")
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)
