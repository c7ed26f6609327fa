"""Build SD 1.x's CLIP tokenizer files (vocab.json, merges.txt, configs) from the BPE table that
ships inside the open-clip-torch wheel (bpe_simple_vocab_16e6.txt.gz), the same table OpenAI's CLIP
and hence SD 1.x's tokenizer were built from. The hub is unreachable, so this is how the real
49408-token vocabulary gets here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import importlib.util


def bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable-unicode map (also used by CLIP).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def bpe_source() -> Path:
    # Located without importing open_clip (whose import pulls in torchvision).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open-clip-torch is not installed (scripts/requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def write_tokenizer_files(dest: Path, vocab_list: list[str], merges: list[tuple[str, ...]]) -> None:
    """A CLIPTokenizer folder (vocab.json, merges.txt, special tokens, config) from a vocabulary
    in id order and its merges: CLIP's own settings, whatever the vocabulary."""
    dest.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                **special,
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "do_lower_case": True,
                "errors": "replace",
                "add_prefix_space": False,
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        )
        + "\n"
    )


def write_tokenizer(dest: Path, vocab_size: int = 49408) -> None:
    """vocab_size 49408: SD 1.x's tokenizer. A smaller size keeps CLIP's first vocab_size - 514
    merges (the 512 byte tokens and the two special tokens stay), as the tiny test tokenizers of
    transformers and diffusers do: a valid CLIPTokenizer whose words split into more pieces."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_source()).read().decode("utf-8").split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges (line 0 is a version header).
    n_merges = vocab_size - 512 - 2
    assert 0 <= n_merges <= 49152 - 256 - 2, vocab_size
    merges = [tuple(m.split()) for m in lines[1 : n_merges + 1]]
    base = list(bytes_to_unicode().values())
    vocab_list = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab_list) == vocab_size, len(vocab_list)
    write_tokenizer_files(dest, vocab_list, merges)


def check_tokenizer(dest: Path, vocab_size: int = 49408) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(dest))
    assert len(tok) == vocab_size, len(tok)
    if vocab_size != 49408:
        assert tok.bos_token_id == vocab_size - 2 and tok.eos_token_id == tok.pad_token_id == vocab_size - 1
        return
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407
    ids = tok("a photograph of an astronaut riding a horse").input_ids
    # The ids SD 1.x's published tokenizer gives for this prompt.
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407], ids


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1])
    write_tokenizer(out)
    check_tokenizer(out)
    print(f"wrote {out}")
