"""Build a CosyVoice2 model directory with random weights, offline, in seconds.

The same classes and file layout as ``CosyVoice2-0.5B`` (``cosyvoice2.yaml``,
``llm.pt``, ``flow.pt``, ``hift.pt``, ``CosyVoice-BlankEN/``, ``campplus.onnx``,
``speech_tokenizer_v2.onnx``, ``spk2info.pt``), so loading and inference run the real
upstream code; only the sizes shrink (``tiny``) or stay (``full``: the released
architecture, for benchmarks). Random weights speak noise: check structure, not content.

- Qwen2: 2 layers x 64 wide (full: 24 x 896), byte-level BPE tokenizer (256 byte tokens,
  no merges) plus Qwen's 3 base specials; CosyVoice adds its own specials on load.
- Flow: the conformer encoder must stay 512 wide (upstream hardcodes it); 1 block.
  Decoder 32 channels, 1 block. HiFT 32 base channels.
- campplus and the speech tokenizer are small ONNX graphs with the real input/output
  signatures: ``[1,T,80]`` fbank -> ``[1,192]`` embedding; ``([1,128,T] mel, [1] length)``
  -> int64 ``[1, ceil(T/4)]`` tokens below 6561.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SPEAKER_ID: Final = "tiny_spk"
SPEECH_TOKENS: Final = 6561
QWEN_SPECIALS: Final = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True, slots=True)
class ModelSize:
    llm_hidden: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_intermediate: int
    vocab_size: int
    encoder_blocks: int
    encoder_units: int
    decoder_channels: int
    decoder_blocks: int
    decoder_mid_blocks: int
    decoder_heads: int
    hift_channels: int
    f0_channels: int


TINY: Final = ModelSize(
    llm_hidden=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=128,
    vocab_size=320, encoder_blocks=1, encoder_units=512, decoder_channels=32,
    decoder_blocks=1, decoder_mid_blocks=1, decoder_heads=2, hift_channels=32, f0_channels=32,
)  # fmt: skip
FULL: Final = ModelSize(
    llm_hidden=896, llm_layers=24, llm_heads=14, llm_kv_heads=2, llm_intermediate=4864,
    vocab_size=151936, encoder_blocks=6, encoder_units=2048, decoder_channels=256,
    decoder_blocks=4, decoder_mid_blocks=12, decoder_heads=8, hift_channels=512, f0_channels=512,
)  # fmt: skip


def _yaml(size: ModelSize) -> str:
    """The model sections of upstream's ``cosyvoice2.yaml`` with ``size``'s dimensions."""
    return textwrap.dedent(f"""\
        sample_rate: 24000
        llm_input_size: {size.llm_hidden}
        llm_output_size: {size.llm_hidden}
        spk_embed_dim: 192
        qwen_pretrain_path: ''
        token_frame_rate: 25
        token_mel_ratio: 2

        llm: !new:cosyvoice.llm.llm.Qwen2LM
            llm_input_size: !ref <llm_input_size>
            llm_output_size: !ref <llm_output_size>
            speech_token_size: {SPEECH_TOKENS}
            length_normalized_loss: True
            lsm_weight: 0
            mix_ratio: [5, 15]
            llm: !new:cosyvoice.llm.llm.Qwen2Encoder
                pretrain_path: !ref <qwen_pretrain_path>
            sampling: !name:cosyvoice.utils.common.ras_sampling
                top_p: 0.8
                top_k: 25
                win_size: 10
                tau_r: 0.1

        flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
            input_size: 512
            output_size: 80
            spk_embed_dim: !ref <spk_embed_dim>
            output_type: 'mel'
            vocab_size: {SPEECH_TOKENS}
            input_frame_rate: !ref <token_frame_rate>
            only_mask_loss: True
            token_mel_ratio: !ref <token_mel_ratio>
            pre_lookahead_len: 3
            encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
                output_size: 512
                attention_heads: 8
                linear_units: {size.encoder_units}
                num_blocks: {size.encoder_blocks}
                dropout_rate: 0.1
                positional_dropout_rate: 0.1
                attention_dropout_rate: 0.1
                normalize_before: True
                input_layer: 'linear'
                pos_enc_layer_type: 'rel_pos_espnet'
                selfattention_layer_type: 'rel_selfattn'
                input_size: 512
                use_cnn_module: False
                macaron_style: False
                use_dynamic_chunk: True
            decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
                in_channels: 240
                n_spks: 1
                spk_emb_dim: 80
                cfm_params: !new:omegaconf.DictConfig
                    content:
                        sigma_min: 1e-06
                        solver: 'euler'
                        t_scheduler: 'cosine'
                        training_cfg_rate: 0.2
                        inference_cfg_rate: 0.7
                        reg_loss_type: 'l1'
                estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
                    in_channels: 320
                    out_channels: 80
                    channels: [{size.decoder_channels}]
                    dropout: 0.0
                    attention_head_dim: 64
                    n_blocks: {size.decoder_blocks}
                    num_mid_blocks: {size.decoder_mid_blocks}
                    num_heads: {size.decoder_heads}
                    act_fn: 'gelu'
                    static_chunk_size: !ref <token_frame_rate> * <token_mel_ratio>
                    num_decoding_left_chunks: 2

        hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
            in_channels: 80
            base_channels: {size.hift_channels}
            nb_harmonics: 8
            sampling_rate: !ref <sample_rate>
            nsf_alpha: 0.1
            nsf_sigma: 0.003
            nsf_voiced_threshold: 10
            upsample_rates: [8, 5, 3]
            upsample_kernel_sizes: [16, 11, 7]
            istft_params:
                n_fft: 16
                hop_len: 4
            resblock_kernel_sizes: [3, 7, 11]
            resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
            source_resblock_kernel_sizes: [7, 7, 11]
            source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
            lrelu_slope: 0.1
            audio_limit: 0.99
            f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
                num_class: 1
                in_channels: 80
                cond_channels: {size.f0_channels}

        get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
            token_path: !ref <qwen_pretrain_path>
            skip_special_tokens: True
        allowed_special: 'all'
        feat_extractor: !name:matcha.utils.audio.mel_spectrogram
            n_fft: 1920
            num_mels: 80
            sampling_rate: !ref <sample_rate>
            hop_size: 480
            win_size: 1920
            fmin: 0
            fmax: 8000
            center: False
        """)


def _write_qwen(path: Path, size: ModelSize) -> None:
    """``CosyVoice-BlankEN``: a byte-level tokenizer and a random Qwen2 checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=QWEN_SPECIALS[0],
        pad_token=QWEN_SPECIALS[0],
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
    )
    tokenizer.save_pretrained(path)
    config = Qwen2Config(
        vocab_size=size.vocab_size,
        hidden_size=size.llm_hidden,
        intermediate_size=size.llm_intermediate,
        num_hidden_layers=size.llm_layers,
        num_attention_heads=size.llm_heads,
        num_key_value_heads=size.llm_kv_heads,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)


def _write_onnx_stubs(model_dir: Path, seed: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def save(graph: Any, name: str) -> None:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by any onnxruntime >= 1.10
        onnx.checker.check_model(model)
        onnx.save(model, str(model_dir / name))

    weight = numpy_helper.from_array(rng.standard_normal((80, 192)).astype(np.float32) * 0.1, "w")
    save(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["feat"], ["mean"], axes=[1], keepdims=0),
                helper.make_node("MatMul", ["mean", "w"], ["embedding"]),
            ],
            "campplus_stub",
            [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, "T", 80])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
            [weight],
        ),
        "campplus.onnx",
    )
    constants = [
        numpy_helper.from_array(np.array(v, dtype=np.int64), n)
        for n, v in (
            ("start", [0]), ("end", [2**62]), ("axis", [2]), ("step", [4]), ("mod", [SPEECH_TOKENS])
        )
    ] + [numpy_helper.from_array(np.array([997.0], dtype=np.float32), "scale")]  # fmt: skip
    save(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["feats"], ["frames"], axes=[1], keepdims=1),
                helper.make_node("Slice", ["frames", "start", "end", "axis", "step"], ["picked"]),
                helper.make_node("Mul", ["picked", "scale"], ["scaled"]),
                helper.make_node("Abs", ["scaled"], ["positive"]),
                helper.make_node("Cast", ["positive"], ["as_int"], to=TensorProto.INT64),
                helper.make_node("Cast", ["feats_length"], ["length64"], to=TensorProto.INT64),
                helper.make_node("Sub", ["length64", "length64"], ["zero"]),
                helper.make_node("Add", ["as_int", "zero"], ["shifted"]),
                helper.make_node("Mod", ["shifted", "mod"], ["wrapped"]),
                helper.make_node("Squeeze", ["wrapped", "squeeze_axes"], ["tokens"]),
            ],
            "speech_tokenizer_stub",
            [
                helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
                helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
            ],
            [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"])],
            [*constants, numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes")],
        ),
        "speech_tokenizer_v2.onnx",
    )


def build_model_dir(model_dir: Path, size: ModelSize = TINY, seed: int = 0) -> Path:
    """Write a random CosyVoice2 model directory at ``model_dir`` and return it."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from synthesis.cosyvoice_import import import_cosyvoice2

    import_cosyvoice2()  # shims + sys.path, so the yaml's !new: tags resolve
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    qwen_dir = model_dir / "CosyVoice-BlankEN"
    _write_qwen(qwen_dir, size)
    yaml_text = _yaml(size)
    (model_dir / "cosyvoice2.yaml").write_text(yaml_text)
    configs = load_hyperpyyaml(yaml_text, overrides={"qwen_pretrain_path": str(qwen_dir)})
    torch.save(configs["llm"].state_dict(), model_dir / "llm.pt")
    torch.save(configs["flow"].state_dict(), model_dir / "flow.pt")
    torch.save(configs["hift"].state_dict(), model_dir / "hift.pt")
    _write_onnx_stubs(model_dir, seed)
    torch.save({SPEAKER_ID: {"embedding": torch.randn(1, 192)}}, model_dir / "spk2info.pt")
    return model_dir


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--full-size", action="store_true", help="the released architecture")
    args = parser.parse_args()
    started = time.perf_counter()
    build_model_dir(args.model_dir, FULL if args.full_size else TINY)
    print(f"built {args.model_dir} in {time.perf_counter() - started:.1f} s")  # noqa: T201
