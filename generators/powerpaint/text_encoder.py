"""PowerPaint's task tokens and its text encoder: the CLIP text model, extended with 30 task tokens, that
conditions the BrushNet branch with the task prompt (" P_obj" for object insertion)."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import torch

from generators.powerpaint.checkpoint import check_state_dict_keys


logger = logging.getLogger(__name__)

TASK_TOKEN_NAMES = ("P_ctxt", "P_shape", "P_obj")
VECTORS_PER_TASK_TOKEN = 10
TASK_TOKENS = tuple(f"{name}_{i}" for name in TASK_TOKEN_NAMES for i in range(VECTORS_PER_TASK_TOKEN))
"""The 30 tokens appended to the CLIP vocabulary, in id order: P_ctxt_0..9, P_shape_0..9, P_obj_0..9."""

OBJECT_PROMPT = " P_obj"
OBJECT_NEGATIVE_PROMPT = "P_obj"
"""Branch prompts of text-guided object inpainting (PowerPaint's promptA = promptB, so no tradeoff mixing)."""

WRAPPED_EMBEDDING_KEY = "embeddings.token_embedding.wrapped.weight"
TRAINABLE_EMBEDDING_PREFIX = "embeddings.token_embedding.trainable_embeddings."
TEXT_MODEL_PREFIX = "text_model."
IGNORED_TEXT_KEYS = frozenset({"embeddings.position_ids"})
"""A buffer older transformers versions saved; it is recomputed, so its presence in a file is harmless."""

_TASK_TOKEN_PATTERN = re.compile(r"\b(" + "|".join(TASK_TOKEN_NAMES) + r")\b")


def expand_task_tokens(text: str) -> str:
    """Rewrite each task word (``P_obj``) as its 10 sub-tokens (``P_obj_0 ... P_obj_9``), as PowerPaint does."""
    return _TASK_TOKEN_PATTERN.sub(
        lambda match: " ".join(f"{match.group(1)}_{i}" for i in range(VECTORS_PER_TASK_TOKEN)), text
    )


def add_task_tokens(tokenizer: Any) -> Any:
    """Append the 30 task tokens to a CLIP tokenizer (ids ``len(tokenizer) ..`` in ``TASK_TOKENS`` order)."""
    first_id = len(tokenizer)
    added = tokenizer.add_tokens(list(TASK_TOKENS))
    ids = tokenizer.convert_tokens_to_ids(list(TASK_TOKENS))
    if added != len(TASK_TOKENS) or ids != list(range(first_id, first_id + len(TASK_TOKENS))):
        raise ValueError(f"could not append the task tokens to the tokenizer (added {added}, ids {ids[:3]}...)")
    return tokenizer


def _strip_text_model_prefix(key: str) -> str:
    """CLIP text keys with or without ``text_model.`` (transformers 4 saved it, transformers 5 does not)."""
    return key.removeprefix(TEXT_MODEL_PREFIX)


def load_brushnet_text_encoder(
    weights_file: str | Path, config: Any, tokenizer: Any, dtype: torch.dtype = torch.float32
) -> Any:
    """The PowerPaint text encoder as a plain ``CLIPTextModel`` whose vocabulary includes the task tokens.

    The file stores the CLIP token table as ``...token_embedding.wrapped.weight`` and each task word's 10 vectors as
    ``...token_embedding.trainable_embeddings.{P_ctxt,P_shape,P_obj}``. Resizing the table by 30 rows and copying
    each word's vectors into the rows of its sub-tokens gives the same lookups without a wrapper module.
    ``tokenizer`` must already hold the task tokens (``add_task_tokens``). Missing, unexpected or mis-shaped keys
    raise ``ValueError`` naming them.
    """
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    weights_file = Path(weights_file)
    if weights_file.suffix != ".safetensors":
        raise ValueError(f"nearid loads safetensors only, got {weights_file}")
    state = {_strip_text_model_prefix(key): tensor for key, tensor in load_file(str(weights_file)).items()}
    for key in IGNORED_TEXT_KEYS & set(state):
        logger.info("ignoring %s in %s (recomputed buffer)", key, weights_file)
        del state[key]

    model = CLIPTextModel(copy.deepcopy(config))  # resizing updates the config's vocab_size
    base_vocab = model.config.vocab_size
    model.resize_token_embeddings(base_vocab + len(TASK_TOKENS), mean_resizing=False)
    token_key = next(key for key in model.state_dict() if key.endswith("embeddings.token_embedding.weight"))
    model_keys = {_strip_text_model_prefix(key): key for key in model.state_dict() if key not in IGNORED_TEXT_KEYS}

    hidden = model.config.hidden_size
    expected = {key: tuple(model.state_dict()[name].shape) for key, name in model_keys.items()}
    del expected[_strip_text_model_prefix(token_key)]
    expected[WRAPPED_EMBEDDING_KEY] = (base_vocab, hidden)
    for name in TASK_TOKEN_NAMES:
        expected[TRAINABLE_EMBEDDING_PREFIX + name] = (VECTORS_PER_TASK_TOKEN, hidden)
    found = {key: tuple(tensor.shape) for key, tensor in state.items()}
    check_state_dict_keys(expected, found, f"PowerPaint text encoder {weights_file}")

    task_ids = tokenizer.convert_tokens_to_ids(list(TASK_TOKENS))
    if sorted(task_ids) != list(range(base_vocab, base_vocab + len(TASK_TOKENS))):
        raise ValueError(
            f"the tokenizer's task token ids {task_ids[:3]}... do not directly follow the {base_vocab}-token CLIP "
            "vocabulary: build it with add_task_tokens on the base CLIP tokenizer"
        )
    table = torch.empty(base_vocab + len(TASK_TOKENS), hidden, dtype=state[WRAPPED_EMBEDDING_KEY].dtype)
    table[:base_vocab] = state.pop(WRAPPED_EMBEDDING_KEY)
    for index, name in enumerate(TASK_TOKEN_NAMES):
        rows = task_ids[index * VECTORS_PER_TASK_TOKEN : (index + 1) * VECTORS_PER_TASK_TOKEN]
        table[rows] = state.pop(TRAINABLE_EMBEDDING_PREFIX + name)
    state[_strip_text_model_prefix(token_key)] = table
    model.load_state_dict({model_keys[key]: tensor for key, tensor in state.items()}, strict=True)
    logger.info("loaded PowerPaint text encoder from %s (%d task tokens)", weights_file, len(TASK_TOKENS))
    return model.to(dtype).eval()
