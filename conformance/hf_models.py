"""Small HuggingFace ``transformers`` and timm transformer models for the import sweep
(``import_sweep --hf``) and the tests: 2 layers, hidden 32, 2-4 heads, vocab 64, sequence 8,
32x32 images in 8x8 patches, random weights (nothing is downloaded), float64.

Each entry of ``HF_MODELS`` builds ``(module, example input, loss)``: the module is
``rosetta.importers.hf.Logits`` of a ``transformers`` model (its first output: the task head's
logits, a bare encoder's last hidden state; a timm model, which returns its logits, as it is),
the loss the spec's cross-entropy (token level for LM heads and
encoders, ``TokenCrossEntropy``). Configs set ``pad_token_id=None`` where the model does not need
one, except RoBERTa and BART, which compute from it (position ids, the eos mask); their example
batch ends in pad tokens (the certificate's first step trains on it), so the padding rows
(``Embedding(padding_idx)``, a zero gradient) are exercised. Every other setting is the
library's default, attention ``eager`` (its attention dropout is an ``nn.Dropout`` the
certificate gives masks to), except ViT, built with the library's default ``sdpa`` attention:
its eager attention computes the softmax in float32 (``FLOAT32``), its SDPA one in float64, and
its attention dropout rate is 0.
"""

from __future__ import annotations

import sys
import types

VOCAB, SEQ, HIDDEN, LAYERS, BATCH = 64, 8, 32, 2, 2


def _imports():
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torch
    import transformers
    return torch, transformers


def _common(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                pad_token_id=None, attn_implementation="eager", use_cache=False)
    base.update(kw)
    return base


def _text(cls_name, config_name, token_level, **kw):
    def build(hidden=HIDDEN, layers=LAYERS):
        torch, T = _imports()
        cfg = getattr(T, config_name)(**_common(**{**kw, "hidden_size": hidden,
                                                   "num_hidden_layers": layers}))
        return getattr(T, cls_name)(cfg), "tokens", token_level
    return build


def _gpt2(hidden=HIDDEN, layers=LAYERS):
    torch, T = _imports()
    cfg = T.GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=2,
                       n_positions=16, attn_implementation="eager", use_cache=False,
                       bos_token_id=0, eos_token_id=0)
    return T.GPT2LMHeadModel(cfg), "tokens", True


def _vit(hidden=HIDDEN, layers=LAYERS):
    torch, T = _imports()
    cfg = T.ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=64, image_size=32, patch_size=8, num_labels=10,
                      attn_implementation="sdpa")
    return T.ViTForImageClassification(cfg), "image", False


def _t5(hidden=HIDDEN, layers=LAYERS):
    torch, T = _imports()
    # dropout_rate=0: T5Attention drops its weights with a functional call whose rate is a
    # float attribute (not an nn.Dropout), which the certificate's dropout="off" cannot zero
    cfg = T.T5Config(vocab_size=VOCAB, d_model=hidden, d_kv=16, d_ff=64, num_layers=layers,
                     num_heads=2, pad_token_id=None, attn_implementation="eager",
                     use_cache=False, dropout_rate=0.0)
    return T.T5EncoderModel(cfg), "tokens", True


def _bart(hidden=HIDDEN, layers=LAYERS):
    torch, T = _imports()
    # dropout=0: BART drops its hidden states with functional calls whose rate is a float
    # attribute (as T5), which the certificate's dropout="off" cannot zero
    cfg = T.BartConfig(dropout=0.0, vocab_size=VOCAB, d_model=hidden, encoder_layers=layers,
                       decoder_layers=layers, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       max_position_embeddings=16, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, attn_implementation="eager", use_cache=False)
    return T.BartForSequenceClassification(cfg), "tokens", False


def _whisper(hidden=HIDDEN, layers=LAYERS):
    torch, T = _imports()
    cfg = T.WhisperConfig(vocab_size=VOCAB, d_model=hidden, encoder_layers=layers,
                          decoder_layers=layers, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                          num_mel_bins=8, max_source_positions=SEQ, pad_token_id=None,
                          attn_implementation="eager", use_cache=False)
    return T.WhisperForAudioClassification(cfg), "audio", False


def _timm(name, vit=True, **kw):
    """A timm model at 32x32 images: a ViT-style one (``vit``) in 8x8 patches, ``hidden`` wide,
    ``layers`` deep, 2 heads; else its own sizes with ``kw`` (Swin's stages; MobileViT)."""
    def build(hidden=HIDDEN, layers=LAYERS):
        _imports()
        import timm
        args = dict(img_size=32, patch_size=8, embed_dim=hidden, depth=layers,
                    num_heads=2) if vit else {}
        args.update(kw)
        return timm.create_model(name, pretrained=False, num_classes=10, **args), "image", False
    return build


HF_MODELS = {
    "bert": _text("BertForSequenceClassification", "BertConfig", False),
    "gpt2": _gpt2,
    "distilbert": _text("DistilBertForSequenceClassification", "DistilBertConfig", False,
                        dim=HIDDEN, n_layers=LAYERS, n_heads=2, hidden_dim=64),
    "roberta": _text("RobertaForSequenceClassification", "RobertaConfig", False,
                     max_position_embeddings=20, pad_token_id=1),
    "albert": _text("AlbertForSequenceClassification", "AlbertConfig", False,
                    embedding_size=16),
    "electra": _text("ElectraForSequenceClassification", "ElectraConfig", False,
                     embedding_size=16),
    "vit": _vit,
    "llama": _text("LlamaForCausalLM", "LlamaConfig", True, num_attention_heads=4,
                   num_key_value_heads=2),
    "mistral": _text("MistralForCausalLM", "MistralConfig", True, num_attention_heads=4,
                     num_key_value_heads=2),
    "t5_encoder": _t5,
    "bart": _bart,
    "whisper_encoder": _whisper,
    "timm/vit_tiny_patch16_224": _timm("vit_tiny_patch16_224"),
    "timm/deit_tiny_patch16_224": _timm("deit_tiny_patch16_224"),
    "timm/beit_base_patch16_224": _timm("beit_base_patch16_224"),
    "timm/eva02_tiny_patch14_224": _timm("eva02_tiny_patch14_224"),
    "timm/swin_tiny_patch4_window7_224": _timm(
        "swin_tiny_patch4_window7_224", False, img_size=32, patch_size=4, embed_dim=16,
        depths=(2, 2), num_heads=(2, 2), window_size=4),
    "timm/mobilevit_xxs": _timm("mobilevit_xxs", False),
}


# Models whose source computes part of its float64 forward in float32 (a float64 import of them
# is refused in one line: the spec computes in one float dtype); they are imported and certified
# in float32 (the certificate's float32 tier, at the measured-noise bounds), where those casts
# are no-ops. The value says which part.
FLOAT32 = {
    "llama": "LlamaRMSNorm's hidden_states.to(torch.float32)",
    "mistral": "MistralRMSNorm's hidden_states.to(torch.float32)",
    "t5_encoder": "T5LayerNorm's hidden_states.to(torch.float32)",
}


# Models certified at another batch than BATCH: MobileViT at 32x32 images ends in a 1x1 map
# whose BatchNorm sees 2 values a channel at batch 2, so ill-conditioned that torch against
# itself (channels_last) differs by 1.2e-9 in float64 gradients; at batch 8 by 5e-14.
BATCHES = {"timm/mobilevit_xxs": 8}


def dtype_of(name) -> str:
    """The dtype the sweep imports ``name`` in: float32 for ``FLOAT32``, else float64."""
    return "float32" if name in FLOAT32 else "float64"


def build(name, hidden=HIDDEN, layers=LAYERS, batch=None, seed=0, dtype="float64"):
    """``(module, example input, loss)`` of ``HF_MODELS[name]`` in ``dtype`` (see the module
    doc), at ``batch`` examples (default ``BATCHES``' or ``BATCH``); ``hidden``/``layers``
    shrink it further (the CI tests)."""
    torch, _ = _imports()
    batch = BATCHES.get(name, BATCH) if batch is None else batch
    from rosetta.importers.hf import Logits, TokenCrossEntropy

    torch.manual_seed(seed)
    model, kind, token_level = HF_MODELS[name](hidden=hidden, layers=layers)
    dt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    torch_, T = _imports()
    cfg = getattr(model, "config", None)
    pad = getattr(cfg, "pad_token_id", None)
    eos = cfg.eos_token_id if getattr(cfg, "is_encoder_decoder", False) else None
    if isinstance(model, T.PreTrainedModel):   # a ModelOutput: its first field; timm: a tensor
        model = Logits(model)
    model = model.to(dt)
    g = torch.Generator().manual_seed(seed)
    if kind == "tokens":
        x = torch.randint(0, VOCAB, (batch, SEQ), generator=g)
        if pad is not None:   # a padded batch: the last example ends in 3 pad tokens
            x[x == pad] = (pad + 2) % VOCAB
            x[-1, -3:] = pad
            if eos is not None:   # BART's classification head reads each example's last eos
                x[x == eos] = (eos + 2) % VOCAB
                x[:-1, -1] = eos
                x[-1, -4] = eos
    elif kind == "image":
        x = torch.randn(batch, 3, 32, 32, generator=g, dtype=torch.float64).to(dt)
    else:   # audio: (N, mel bins, 2 * positions) log-mel frames
        x = torch.randn(batch, 8, 2 * SEQ, generator=g, dtype=torch.float64).to(dt)
    loss = TokenCrossEntropy() if token_level else torch.nn.CrossEntropyLoss()
    return model, x, loss


__all__ = ["BATCHES", "FLOAT32", "HF_MODELS", "build", "dtype_of"]
