"""Tiny components shared by the tiny pipelines: in-memory tokenizers (no hub, no sentencepiece), CLIP text
encoders and 8x VAEs with the published latent layouts, and seeding helpers."""

from __future__ import annotations

from typing import Any

import torch


TEXT_DIM = 32
CLIP_MAX_LENGTH = 77


# -- tokenizers -----------------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer (514 tokens: bytes, their word-final forms, start and end)."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def tiny_t5_tokenizer() -> Any:
    """A unigram T5 tokenizer over printable ASCII (pad 0, eos 1, unk 2)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(chr(c), -1.0) for c in range(32, 127)]
    pieces += [("▁" + chr(c), -1.5) for c in range(33, 127)]
    pieces.append(("▁", -2.0))
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def tiny_qwen_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer with the chat special tokens the Qwen-Image prompt template needs."""
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=1024)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


# -- shared components ----------------------------------------------------------------------------


def seed_torch(seed: int) -> None:
    """Seed torch's global RNG, which the model constructors draw their initial weights from."""
    torch.manual_seed(seed)


def tiny_clip_text(seed: int, vocab_size: int, with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    seed_torch(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=TEXT_DIM,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    model_cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_cls(config).eval()


VAE_LATENT_LAYOUTS = {"flux": (16, 0.3611, 0.1159), "sdxl": (4, 0.13025, None), "sd15": (4, 0.18215, None)}
"""Family -> (latent channels, scaling factor, shift factor) of the published VAEs."""


def tiny_vae(seed: int, family: str) -> Any:
    """An 8x AutoencoderKL with the latent layout of ``family`` (FLUX has no quant convs and no upcast)."""
    from diffusers import AutoencoderKL

    latent_channels, scaling, shift = VAE_LATENT_LAYOUTS[family]
    flux = family == "flux"
    seed_torch(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=not flux,
        use_post_quant_conv=not flux,
        force_upcast=not flux,
    ).eval()


def randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Give zero-initialised layers small random values so their input actually changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
