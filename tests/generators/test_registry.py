from __future__ import annotations

import json

import pytest

from generators.registry import CONFIGS, PAPER_CONFIGS, get_config
from nearid.cli import main


PAPER_TABLE = {  # name: (family, working resolution, steps, guidance, strength) from the paper, appendix B.1
    "flux-fill-512": ("flux-fill", 512, 50, 30.0, None),
    "flux-fill-1024": ("flux-fill", 1024, 50, 30.0, None),
    "flux-canny-512": ("flux-canny", 512, 28, 7.0, 0.99),
    "flux-canny-1024": ("flux-canny", 1024, 28, 7.0, 0.99),
    "sdxl-512": ("sdxl-inpaint", 512, 30, 8.0, 0.99),
    "sdxl-1024": ("sdxl-inpaint", 1024, 30, 8.0, 0.99),
    "qwen-512": ("qwen-inpaint", 512, 8, 1.0, None),
    "qwen-1328": ("qwen-inpaint", 1328, 8, 1.0, None),
    "powerpaint": ("powerpaint", 640, 45, 7.5, None),
}


def test_the_nine_paper_configurations() -> None:
    assert PAPER_CONFIGS == tuple(PAPER_TABLE)
    for name, (family, resolution, steps, guidance, strength) in PAPER_TABLE.items():
        config = get_config(name)
        assert (config.family, config.resolution, config.steps, config.guidance, config.strength) == (
            family,
            resolution,
            steps,
            guidance,
            strength,
        )
    assert (
        get_config("flux-canny-512").extra("canny_low") == 50
        and get_config("flux-canny-512").extra("canny_high") == 200
    )
    assert get_config("sdxl-512").negative_prompt and "watermark" in get_config("sdxl-512").negative_prompt
    qwen = get_config("qwen-1328")
    assert (
        qwen.guidance == 1.0
        and qwen.extra("true_cfg_scale") is None
        and qwen.model("lora").weight_name.endswith("8steps-V1.1.safetensors")
    )
    assert dict(qwen.extra("scheduler_config"))["time_shift_type"] == "exponential"
    assert get_config("powerpaint").resize_mode == "shortest-side" and get_config("powerpaint").size_multiple == 8
    assert len({c.params_hash() for c in CONFIGS.values()}) == len(CONFIGS)


def test_unknown_names_and_bad_overrides() -> None:
    with pytest.raises(ValueError, match="unknown generator configuration 'flux'.*flux-fill-512"):
        get_config("flux")
    base = get_config("sdxl-512")
    with pytest.raises(ValueError, match="unknown configuration fields"):
        base.with_overrides(step=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        base.with_overrides(resolution=100)
    assert base.with_overrides(batch_size=8).params_hash() == base.params_hash()  # batching never changes images
    assert base.with_overrides(steps=2).params_hash() != base.params_hash()
    with pytest.raises(ValueError, match="1 steps at strength 0.99 leave no denoising step"):
        base.with_overrides(steps=1)


def test_cli_lists_every_parameter(capsys: pytest.CaptureFixture) -> None:
    assert main(["generators", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == list(CONFIGS)
    assert (
        listed["qwen-512"]["steps"] == 8 and listed["qwen-512"]["params_hash"] == get_config("qwen-512").params_hash()
    )
    assert main(["generators"]) == 0
    assert "powerpaint" in capsys.readouterr().out
