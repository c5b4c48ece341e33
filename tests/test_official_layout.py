"""The RSANet-R50 network built from our parts has the official checkpoint's parameters, key by key.

The reference (``../shared/reference/official_rsanet_r50_ssv2_state_dict.txt``) lists every key and shape of the
released SSv2 checkpoint. Loading those weights (issue 3) needs the same names and shapes; the only difference is the
classifier, which the official code stores as ``new_fc`` with a trailing singleton axis.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from rsa_lightning.layers import RelationalSelfAttention
from rsa_lightning.models import ResNet

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official_rsanet_r50_ssv2_state_dict.txt"
PREFIX = "module.base_model."


def _reference_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in REFERENCE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        layout[key] = tuple(int(size) for size in re.findall(r"\d+", shape))
    return layout


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference file not found: {REFERENCE}")
def test_rsanet_r50_matches_the_official_checkpoint_layout() -> None:
    net = ResNet(
        num_classes=174,
        block_counts=(3, 4, 6, 3),
        widths=(64, 128, 256, 512),
        expansion=4,
        stem_width=64,
        stmixer=functools.partial(RelationalSelfAttention, num_heads=8, kernel_size=(5, 7, 7)),
        stmixer_positions=[[2], [1, 3], [1, 3, 5], [1]],
    )
    ours = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    reference = _reference_layout()
    backbone = {key.removeprefix(PREFIX): shape for key, shape in reference.items() if key.startswith(PREFIX)}
    assert ours.keys() - {"fc.weight", "fc.bias"} == backbone.keys()
    assert {key: ours[key] for key in backbone} == backbone
    assert reference["module.new_fc.weight"] == (*ours["fc.weight"], 1)
    assert reference["module.new_fc.bias"] == ours["fc.bias"]
    assert sum(p.numel() for p in net.parameters()) == 22_034_302  # the count stated in the reference header
