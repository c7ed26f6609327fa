"""Tokenizer references: transformers' slow CLIPTokenizer over a fixed corpus of prompts.

Writes tokenizer/corpus.json: for every prompt the ids exactly as diffusers asks for them
(padding="max_length", max_length=model_max_length, truncation=True), the untruncated ids
(padding="longest", no truncation; what diffusers compares against to warn about truncation) and
whether truncation happened. The corpus below is the definition of the data: edit it here, then
regenerate.

ftfy must NOT be installed: without it CLIPTokenizer cleans text with BERT's BasicTokenizer
(control characters dropped, whitespace normalised, spaces around CJK ideographs, NFC, lower-case),
and that is the behaviour the TypeScript tokenizer reproduces.
"""
from __future__ import annotations

from typing import Any

# Sequences built from one-token words, so their lengths are known: "cat" is a single BPE token.
# Lengths below count BOS and EOS, as the padded ids do; 77 is SD 1.x's model_max_length.
def _cats(n: int) -> str:
    return " ".join(["cat"] * n)


# (prompt, expected untruncated length incl. BOS/EOS): checked at generation time so the
# boundary cases keep testing the boundary if the corpus or vocabulary ever changes.
BOUNDARY: list[tuple[str, int]] = [
    (_cats(73), 75),
    (_cats(74), 76),
    (_cats(75), 77),  # exactly fills 77: not truncated
    (_cats(76), 78),  # one over: the 76th word is replaced by EOS
    (_cats(77), 79),
    # a two-token word straddling the cut: "photo" survives, "realistic" does not
    (_cats(74) + " photorealistic", 78),
    # a two-token word that just fits
    (_cats(73) + " photorealistic", 77),
    # a literal end-of-text marker exactly at the last kept position and just past it
    (_cats(74) + " <|endoftext|>", 77),
    (_cats(75) + " <|endoftext|>", 78),
    # a multi-byte emoji cut between its byte-level BPE pieces by truncation
    (_cats(74) + " 🦩", 78),
]

_LONG_PROMPT = (
    "masterpiece, best quality, ultra detailed, a breathtaking panoramic view of an ancient elven "
    "city built into giant redwood trees, glowing lanterns hanging from rope bridges, waterfalls "
    "cascading into a misty valley, golden hour lighting, volumetric fog, cinematic composition, "
    "by greg rutkowski and alphonse mucha and studio ghibli, trending on artstation, 8k uhd, "
    "sharp focus, intricate details, highly detailed foliage, reflections in a crystal clear lake, "
    "birds flying in the distance, dramatic clouds, depth of field, octane render, unreal engine 5"
)

_LONG_NEGATIVE = (
    "(worst quality:1.4), (low quality:1.4), (normal quality:1.4), lowres, bad anatomy, bad hands, "
    "text, error, missing fingers, extra digit, fewer digits, cropped, jpeg artifacts, signature, "
    "watermark, username, blurry, artist name, deformed, disfigured, mutated hands, poorly drawn "
    "hands, poorly drawn face, mutation, ugly, extra limbs, malformed limbs, missing arms, missing "
    "legs, extra arms, extra legs, fused fingers, too many fingers, long neck, cross-eyed"
)

CORPUS: list[str] = [
    # --- plain prompts ---
    "a photograph of an astronaut riding a horse",
    "a painting of a fox sitting in a field at sunrise, oil on canvas",
    "portrait of a woman, highly detailed, digital art, trending on artstation",
    "cyberpunk city street at night, neon lights, rain, reflections",
    "a cute corgi wearing sunglasses on the beach",
    "an isometric view of a tiny cozy room, 3d render, octane render",
    "studio ghibli style landscape with mountains and a river",
    "macro photo of a dew drop on a leaf",
    "ultra realistic photo of a red sports car, 8k, bokeh",
    "a bowl of ramen, food photography",
    "watercolor sketch of an old lighthouse",
    "the quick brown fox jumps over the lazy dog",
    "a",
    # --- empty and whitespace only ---
    "",
    " ",
    "    ",
    "\t",
    "\n",
    "\r\n",
    " \t\n\r ",
    "\u00a0",
    "\u3000\u3000",
    "\u200b",
    # --- odd whitespace inside text ---
    "a\tcat",
    "a\ncat\non\na\nmat",
    "line one\r\nline two\rline three",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "zero\u200bwidth\u200bspace",
    "zero\u200cwidth\u200dnon-joiner and joiner",
    "  leading and trailing  ",
    "multiple     spaces    between",
    "en\u2002em\u2003thin\u2009hair\u200a spaces",
    "line\u2028separator\u2029paragraph",
    "narrow\u202fno-break and ogham\u1680space",
    "byte\ufefforder mark",
    "soft\u00adhyphen",
    "vertical\x0btab\x0cform feed",
    "next\x85line",
    # --- punctuation runs ---
    "!!!",
    "...",
    "what?!",
    "hello, world!",
    "a--b",
    "@#$%^&*()",
    "~~~ fancy ~~~",
    "foo/bar\\baz",
    '"quoted" text',
    "«guillemets» and „low quotes“",
    "a\u2014em dash\u2013en dash",
    "<tag>",
    "C++ and C#",
    "email@example.com",
    "https://example.com/a?b=c&d=e",
    "#hashtag @mention",
    "smile :) :-( ;)",
    # --- apostrophes and contractions ---
    "it's a dog's life",
    "don't won't can't shouldn't",
    "you're we're they're",
    "I've we've",
    "I'm",
    "we'll you'll",
    "I'd you'd",
    "IT'S DON'T YOU'RE I'VE I'M WE'LL I'D",
    "it\u2019s a dog\u2019s life",
    "'s't're've'm'll'd",
    "o'clock rock'n'roll",
    "''s",
    "rock 'n' roll",
    # long s (U+017F) case-folds to "s": the case-insensitive pattern takes it for "'s"
    "it'\u017f",
    # --- upper and mixed case ---
    "A PHOTOGRAPH OF AN ASTRONAUT RIDING A HORSE",
    "MiXeD CaSe PrOmPt",
    "iPhone McDonald's",
    "\u00c0\u00c9\u00ce\u00d5\u00dc uppercase accents",
    "\u0130stanbul dotted capital I",
    # --- digits and numbers: every digit is its own token ---
    "1",
    "1234567890",
    "3.14159",
    "-42",
    "1,000,000",
    "year 2024",
    "4k 8k 16k uhd",
    "v1.5",
    "512x512",
    "\u2460\u2461\u2462 \u00bc \u00bd \u216b",
    "\u0663 arabic-indic digits \u0661\u0662\u0663",
    "\u0967\u0968\u0969 devanagari",
    "0x1F600",
    "\uff11\uff12\uff13 fullwidth",
    # --- accented Latin ---
    "café crème brûlée",
    "naïve façade",
    "Ångström Øresund Ærø",
    "São Paulo, Łódź, Kraków",
    "cafe\u0301 (decomposed accent)",
    "straße STRASSE",
    "\u0133 \u01c5 \u01c8 \u01cb titlecase digraphs",
    "\ufb01 \ufb02 ligatures",
    # --- Greek and Cyrillic ---
    "Καλημέρα κόσμε",
    "ΟΔΥΣΣΕΥΣ",
    "ΣΑΣ Σ σ ς",
    "Привет, мир!",
    "МОСКВА",
    # combining ypogegrammeni (U+0345): NFC composes it onto alpha; on its own no alternative of
    # the case-insensitive pattern matches it, so it vanishes and splits the word around it
    "\u03b1\u0345 \u0391\u0345 \u1fbc \u1fb3",
    "x\u0345y \u0345 \u0345\u0345!",
    # --- CJK ---
    "一只可爱的猫",
    "山水画，水墨",
    "中文English混合",
    "\U00020000\U0002a6a5 extension b",
    "\uf900 compatibility ideograph",
    "「漢字とひらがな」",
    # --- Japanese kana ---
    "こんにちは世界",
    "カタカナ ｶﾀｶﾅ halfwidth",
    "ひらがな",
    # --- Korean ---
    "안녕하세요",
    "한국어 프롬프트",
    "\u1100\u1161\u11a8 conjoining jamo",
    # --- Arabic, Hebrew and other scripts ---
    "مرحبا بالعالم",
    "שלום עולם",
    "mixed עברית and English",
    "مَرْحَبًا with tashkeel",
    "हिन्दी देवनागरी",
    "ภาษาไทย",
    # --- emoji ---
    "😀",
    "a cat 🐱 on a mat",
    "👨\u200d👩\u200d👧\u200d👦 family",
    "👍🏽 thumbs up",
    "🧑🏿\u200d🚀 astronaut",
    "🏳️\u200d🌈 rainbow flag",
    "🇯🇵🇺🇸 flags",
    "❤️ heart with variation selector",
    "🔥🔥🔥",
    "1️⃣ #️⃣ keycaps",
    "🐦\u200d🔥 phoenix",
    # emoji newer than Python 3.11's Unicode 14.0 tables: unassigned (Cn) there, hence dropped
    "\U0001fa77 pink heart, \U0001fae8 shaking face",
    # --- control and special code points ---
    "null\x00byte",
    "bell\x07 and escape\x1b[31m",
    "del\x7f char",
    "\x01\x02\x03",
    "c1\x80\x9f controls",
    "replacement \ufffd char",
    "private use \ue000 char",
    "noncharacter \uffff",
    "tag \U000e0041 char",
    # --- HTML entities, as scraped captions carry them ---
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&quot;quoted&quot; &#39;single&#39;",
    "&nbsp;space&nbsp;",
    "&#x1F600; &#128512;",
    # --- prompt syntax people type (it is plain text to the tokenizer) ---
    "(masterpiece:1.2), best quality, [foo]",
    "((highly detailed)), (((sharp focus)))",
    "[[blurry]], lowres, bad anatomy",
    "a photo of a cat AND a dog",
    "(red:1.5) (blue:0.5)",
    "{curly|braces}",
    "a BREAK b",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer",
    "<lora:detail:0.8> embedding:easynegative",
    "score_9, score_8_up, source_anime",
    # --- literal special tokens inside text ---
    "<|endoftext|>",
    "<|startoftext|>",
    "a cat<|endoftext|>a dog",
    "<|startoftext|>a cat<|endoftext|>",
    "!!<|endoftext|>!!",
    "<|ENDOFTEXT|>",
    "!!<|EndOfText|>x",
    "<|endof\u200btext|>",
    "!!<|endof\u200btext|>",
    "<|endoftext",
    "<| endoftext |>",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|\u017ftartoftext|>",
    "<|endoftext|>" * 80,
    # --- long prompts ---
    _LONG_PROMPT,
    _LONG_NEGATIVE,
    _LONG_PROMPT + ", " + _LONG_NEGATIVE,
    # --- long words and repeated characters ---
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "zxqjzxqjzxqjzxqjzxqjzxqjzxqjzxqj",  # no merge applies: one token per byte
    "aaaaaaaaaaaaaaaa",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "hahahahahahahahaha",
    "z" * 300,
    "\u2601" * 40,
]


def _token_lists(tok: Any, text: str, max_length: int) -> tuple[list[int], list[int]]:
    padded = tok(text, padding="max_length", max_length=max_length, truncation=True).input_ids
    untruncated = tok(text, padding="longest").input_ids
    return list(padded), list(untruncated)


def generate(ctx: Any) -> None:
    from transformers import CLIPTokenizer

    if ctx.model_dir is None:
        raise ValueError("tokenizer references need --model (its tokenizer/ folder)")
    tok = CLIPTokenizer.from_pretrained(ctx.model_dir / "tokenizer")
    if tok.fix_text is not None:
        raise RuntimeError(
            "ftfy is installed, so CLIPTokenizer cleans text with ftfy.fix_text; the TypeScript tokenizer "
            "reproduces the BasicTokenizer path used without ftfy. Uninstall ftfy and regenerate."
        )
    max_length = int(tok.model_max_length)

    cases = []
    texts = CORPUS + [text for text, _ in BOUNDARY]
    if len(set(texts)) != len(texts):
        raise ValueError("tokenizer corpus has duplicate prompts")
    for text in texts:
        padded, untruncated = _token_lists(tok, text, max_length)
        cases.append(
            {
                "text": text,
                "ids": padded,
                "untruncated_ids": untruncated,
                "truncated": len(untruncated) > max_length,
            }
        )
    for text, expected in BOUNDARY:
        got = len(tok(text).input_ids)
        if got != expected:
            raise ValueError(f"boundary prompt {text[-30:]!r}: {got} tokens, designed for {expected}")

    obj = {
        "tokenizer": "transformers CLIPTokenizer (slow, BasicTokenizer clean-up; ftfy absent)",
        "vocab_size": len(tok),
        "model_max_length": max_length,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "call": 'tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True)',
        "cases": cases,
    }
    meta = {"prompts": len(cases), "truncated": sum(c["truncated"] for c in cases)}
    ctx.save_json("tokenizer:corpus", obj, meta)
