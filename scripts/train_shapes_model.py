"""Train `shapes-sd`, a small SD 1.x model that draws what its prompt says, from scratch on CPU.

    python scripts/train_shapes_model.py --out fixtures/models            # full run (see fixtures/models/shapes-sd-onnx/README.md)
    python scripts/train_shapes_model.py --out /tmp/smoke --smoke         # a one-minute check of every step

No outside data or weights: the images are drawn here (a coloured circle, square or triangle on a
plain background at one of five places, 32 x 32 pixels) with their captions ("a red circle on a
blue background, left"), and every part is built from a config in this file with diffusers' and
transformers' own classes: AutoencoderKL, UNet2DConditionModel (cross-attention to the text),
CLIPTextModel and a CLIPTokenizer whose small BPE vocabulary is learnt here from the caption words.

Steps: (1) draw the data set, holding out HELD_OUT attribute combinations that no training image
shows; (2) train the VAE (MSE + L1 + a small KL term); (3) encode the data set once, set
scaling_factor = 1 / std of the latents; (4) train U-Net and text encoder together (epsilon loss
with min-SNR-5 weighting, 10 % empty captions for classifier-free guidance, EMA of the weights);
(5) round the weights for storage (round_weights(): weight matrices and kernels onto a
per-output-channel int8 grid, the rest to float16, kept as float32 values) in the diffusers folder
<out>/shapes-sd (not committed), and write its ONNX export <out>/shapes-sd-onnx via export_onnx.py
with those initializers stored as int8 + scale or float16 and turned back into float32 inside the
graph, and short tensor names (compact_onnx(): the model computes in float32, on the same weights as
the PyTorch folder; a quarter of float32's bytes); and generation_config.json with the guidance the
model samples best with (GUIDANCE_SCALE), which `sd-harness generate` uses by default.
(6) optionally (--decoder-finetune), fine-tune the VAE decoder alone on noise-augmented latents
(finetune_decoder()) and finish again.
(7) optionally (--optimum), export the PyTorch folder with optimum's exporter as well, to
<out>/shapes-sd-optimum-onnx (not committed).
The held-out prompts and the drawing constants go to <out>/shapes-sd-onnx/prompts.json, which the
adherence test (test/adherence.test.ts) reads.

Deterministic on a given toolchain and thread count (seeded torch and numpy generators,
torch.use_deterministic_algorithms). Threads default to 2 (the project's machine, unshared: a U-Net
step took 0.5-0.6 s); on a loaded machine one thread can be faster (a first version measured 1.0-1.6 s
per step with one thread and 5-15 s with two at load average 11).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import diffusers
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_tokenizer_files import write_tokenizer_files  # noqa: E402
from export_onnx import export_folder  # noqa: E402
from make_tiny_model import SD15_SCHEDULER  # noqa: E402

SEED = 20261207
NAME = "shapes-sd"
SIZE = 32  # image side in pixels; the VAE downsamples by 4, so latents are 4 x 8 x 8

# Colours as drawn (sRGB 0..255). The scorer classifies a pixel by the nearest of these.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
# Shape centre (x, y) in pixels for each position word; +-JITTER pixels around it.
OFFSET = 7
POSITIONS = {
    "left": (SIZE / 2 - OFFSET, SIZE / 2),
    "right": (SIZE / 2 + OFFSET, SIZE / 2),
    "top": (SIZE / 2, SIZE / 2 - OFFSET),
    "bottom": (SIZE / 2, SIZE / 2 + OFFSET),
    "center": (SIZE / 2, SIZE / 2),
}
JITTER = 1.5
SHAPE_SIZE = (10.0, 14.0)  # bounding-box side in pixels, uniform
HELD_OUT = 32  # attribute combinations never shown in training; the adherence test samples them


TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
UNET = dict(
    sample_size=SIZE // 4,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 48),
    layers_per_block=1,
    # diffusers passes this as the number of heads per block: heads of 16 channels
    attention_head_dim=(2, 3),
    cross_attention_dim=TEXT["hidden_size"],
    norm_num_groups=8,
    # a mid block (two ResNets around self- and cross-attention at the 4 x 4 level): the whole
    # picture in view at once, for where the shape goes
    mid_block_type="UNetMidBlock2DCrossAttn",
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=SIZE,
)

# Training lengths (full run; --smoke divides them).
N_IMAGES = 20000
VAE_STEPS, VAE_BATCH, VAE_LR = 1500, 32, 2e-3
UNET_STEPS, UNET_BATCH, UNET_LR = 4000, 64, 1e-3
DEC_STEPS, DEC_LR, NOISE_AUG = 300, 1e-3, 0.3
EMA_DECAY = 0.998
MIN_SNR_GAMMA = 5.0
P_UNCOND = 0.1
# Weight matrices and kernels of at least this many values are stored on a per-channel int8 grid
# (round_weights, compact_onnx); the rest as float16.
INT8_MIN_ELEMENTS = 256
# Classifier-free guidance for `generate` (generation_config.json). Measured on the 32 held-out prompts
# (fixtures/models/shapes-sd-onnx/README.md): 2-2.5 draw the asked colours every time, 7.5 (diffusers'
# default) drives the samples off the latent manifold.
GUIDANCE_SCALE = 2.5
# Initializers compact_onnx() leaves as float32 under their own names: src/pipeline/pipeline.ts reads
# the final LayerNorm by name for clip skip.
KEEP_NAMED = re.compile(r"final_layer_norm\.(weight|bias)$")


# ---------------------------------------------------------------- data


def all_combos() -> list[tuple[str, str, str, str]]:
    return [
        (fg, shape, bg, pos) for fg in COLOURS for shape in SHAPES for bg in COLOURS if bg != fg for pos in POSITIONS
    ]


def caption(fg: str, shape: str, bg: str, pos: str) -> str:
    return f"a {fg} {shape} on a {bg} background, {pos}"


def shape_mask(shape: str, cx: float, cy: float, side: float, ss: int = 4) -> np.ndarray:
    """Coverage in [0, 1] per pixel, from ss x ss samples per pixel."""
    n = SIZE * ss
    c = (np.arange(n) + 0.5) / ss
    x, y = np.meshgrid(c, c)
    h = side / 2
    if shape == "circle":
        m = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif shape == "square":
        m = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    else:  # triangle, apex up: y from cy - h (apex) to cy + h (base), half-width grows to h
        t = (y - (cy - h)) / (2 * h)
        m = (t >= 0) & (t <= 1) & (np.abs(x - cx) <= h * t)
    return m.reshape(SIZE, ss, SIZE, ss).mean(axis=(1, 3))


def draw(fg: str, shape: str, bg: str, pos: str, rng: np.random.Generator) -> np.ndarray:
    side = rng.uniform(*SHAPE_SIZE)
    ax, ay = POSITIONS[pos]
    cx, cy = ax + rng.uniform(-JITTER, JITTER), ay + rng.uniform(-JITTER, JITTER)
    a = shape_mask(shape, cx, cy, side)[..., None]
    img = np.array(COLOURS[bg], np.float64) * (1 - a) + np.array(COLOURS[fg], np.float64) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)  # [H, W, 3]


def make_data(n: int, rng: np.random.Generator):
    combos = all_combos()
    order = rng.permutation(len(combos))
    held = sorted(combos[i] for i in order[:HELD_OUT])
    train = [combos[i] for i in sorted(order[HELD_OUT:])]
    picks = rng.integers(0, len(train), n)
    images = np.stack([draw(*train[i], rng) for i in picks])
    captions = [caption(*train[i]) for i in picks]
    return images, captions, held


# ---------------------------------------------------------------- tokenizer


def learn_bpe(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from the caption words until each word is one token (ties broken
    by the pair's text, so the result is deterministic)."""
    segs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for s in segs:
            for p in zip(s, s[1:]):
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for k, s in enumerate(segs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[k] = out


def write_tokenizer(dest: Path) -> CLIPTokenizer:
    words = sorted({w for c in all_combos() for w in caption(*c).replace(",", " ,").split()})
    merges = learn_bpe(words)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [","]
    vocab_list = letters + [c + "</w>" for c in letters] + ["".join(m) for m in merges]
    vocab_list = list(dict.fromkeys(vocab_list)) + ["<|startoftext|>", "<|endoftext|>"]
    write_tokenizer_files(dest, vocab_list, merges)
    tok = CLIPTokenizer.from_pretrained(str(dest))
    for w in words:  # every caption word is a single token
        ids = tok(w).input_ids
        assert len(ids) == 3 and ids[1] != tok.unk_token_id, (w, ids)
    return tok


# ---------------------------------------------------------------- training


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, H, W] in [-1, 1]


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def train_vae(x: torch.Tensor, steps: int, gen: torch.Generator, log: list) -> AutoencoderKL:
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(**VAE)
    opt = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    t0, acc = time.time(), []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, VAE_LR)
        idx = torch.randint(0, len(x), (VAE_BATCH,), generator=gen)
        batch = x[idx]
        post = vae.encode(batch).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = (rec - batch).pow(2).mean()
        loss = mse + 0.5 * (rec - batch).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        acc.append(mse.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.append(
                {"stage": "vae", "step": step + 1, "mse": float(np.mean(acc)), "wall_s": round(time.time() - t0, 1)}
            )
            print(json.dumps(log[-1]), flush=True)
            acc = []
    return vae.eval()


def train_unet(latents_mean, latents_std, ids, uncond_ids, steps, gen, log, tok_vocab):
    torch.manual_seed(SEED + 2)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tok_vocab,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=tok_vocab - 2,
            eos_token_id=tok_vocab - 1,
            pad_token_id=tok_vocab - 1,
            projection_dim=TEXT["hidden_size"],
            **TEXT,
        )
    )
    unet = UNet2DConditionModel(**UNET)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=1e-4)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # scaled_linear
    abar = torch.cumprod(1 - betas, 0)
    snr = (abar / (1 - abar)).float()
    abar = abar.float()
    t0, acc = time.time(), []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, UNET_LR)
        idx = torch.randint(0, len(ids), (UNET_BATCH,), generator=gen)
        z0 = latents_mean[idx] + latents_std[idx] * torch.randn(latents_mean[idx].shape, generator=gen)
        drop = torch.rand(UNET_BATCH, generator=gen) < P_UNCOND
        batch_ids = torch.where(drop[:, None], uncond_ids[None, :], ids[idx])
        t = torch.randint(0, 1000, (UNET_BATCH,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        ehs = text(batch_ids).last_hidden_state
        pred = unet(zt, t, ehs).sample
        w = torch.clamp(snr[t], max=MIN_SNR_GAMMA) / snr[t]  # min-SNR weighting for epsilon targets
        per = (pred - eps).pow(2).mean(dim=(1, 2, 3))
        loss = (w * per).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema_params, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        acc.append((loss.item(), per.mean().item()))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            m = np.mean(acc, axis=0)
            log.append(
                {
                    "stage": "unet",
                    "step": step + 1,
                    "loss_minsnr": float(m[0]),
                    "eps_mse": float(m[1]),
                    "wall_s": round(time.time() - t0, 1),
                }
            )
            print(json.dumps(log[-1]), flush=True)
            acc = []
    return ema_unet, ema_text


def finetune_decoder(vae: AutoencoderKL, x: torch.Tensor, steps: int, log: list) -> AutoencoderKL:
    """The decoder alone, the encoder frozen (the U-Net's latent space stays as it was), on latents
    with added Gaussian noise of up to NOISE_AUG x the latents' std: the U-Net's samples are not
    exactly on the training latents, and a decoder trained only on posterior samples rendered small
    latent errors as coloured noise (seen on the first full run)."""
    gen = torch.Generator().manual_seed(SEED + 3)
    for p in vae.encoder.parameters():
        p.requires_grad_(False)
    for p in vae.quant_conv.parameters():
        p.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=DEC_LR, weight_decay=0.0)
    vae.train()
    t0, acc = time.time(), []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, DEC_LR, warmup=20)
        idx = torch.randint(0, len(x), (VAE_BATCH,), generator=gen)
        batch = x[idx]
        with torch.no_grad():
            post = vae.encode(batch).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            sigma = NOISE_AUG * z.std() * torch.rand(VAE_BATCH, 1, 1, 1, generator=gen)
            z = z + sigma * torch.randn(z.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = (rec - batch).pow(2).mean()
        loss = mse + 0.5 * (rec - batch).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc.append(mse.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.append(
                {"stage": "decoder", "step": step + 1, "mse": float(np.mean(acc)), "wall_s": round(time.time() - t0, 1)}
            )
            print(json.dumps(log[-1]), flush=True)
            acc = []
    for p in vae.parameters():
        p.requires_grad_(True)
    return vae.eval()


# ---------------------------------------------------------------- ONNX: float16 storage


def int8_storage(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(q as int8, scale shaped to broadcast) when arr is exactly q * scale on a per-channel int8
    grid as round_weights() makes it, along some axis (the exporter may store a Linear's weight
    transposed); None otherwise. Exact means bit for bit: float32(q) * scale == arr."""
    if arr.ndim < 2 or arr.size < INT8_MIN_ELEMENTS:
        return None
    for axis in range(arr.ndim):
        moved = np.moveaxis(arr, axis, 0)
        m = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
        s = (m / np.float32(127)).astype(np.float32)
        s[s == 0] = np.float32(1)
        if not np.array_equal(s.astype(np.float16).astype(np.float32), s):
            continue
        shape = [1] * arr.ndim
        shape[axis] = arr.shape[axis]
        s = s.reshape(shape)
        q = np.rint(arr / s)
        if np.abs(q).max() <= 127 and np.array_equal(q.astype(np.float32) * s, arr):
            return q.astype(np.int8), s
    return None


def compact_onnx(path: Path, min_elements: int = 16) -> dict[str, int]:
    """Make an exported graph small enough to commit, without changing what it computes:
    - each float32 initializer that is exactly on a per-channel int8 grid (round_weights() puts the
      weight matrices and kernels there) is stored as int8 and a float32 scale per channel, followed
      by Cast to float32 and Mul by the scale: the product is exact, so the weights are the same
      float32 values and onnxruntime folds the two nodes when it loads the model;
    - each other float32 initializer of at least min_elements that float16 holds exactly is stored
      as float16 followed by a Cast back to float32;
    - intermediate tensors and initializers get short names and nodes none (the exporter's
      module-scoped names were ~45 % of the U-Net file); graph inputs and outputs keep theirs.
    The price: `conformance --localize` cannot map this graph's nodes to modules.
    Initializers the TypeScript pipeline reads by name (KEEP_NAMED: the text encoder's final
    LayerNorm, which clip skip applies to an earlier hidden state) stay float32 under their names.
    Returns the bytes of weights stored each way."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    keep, casts = [], []
    stored = {"int8": 0, "float16": 0, "float32": 0}
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or KEEP_NAMED.search(init.name):
            keep.append(init)
            if init.data_type == onnx.TensorProto.FLOAT:
                stored["float32"] += 4 * int(np.prod(init.dims))
            continue
        arr = numpy_helper.to_array(init)
        grid = int8_storage(arr)
        if grid is not None:
            q, s = grid
            keep.append(numpy_helper.from_array(q, init.name + "__q"))
            keep.append(numpy_helper.from_array(s, init.name + "__s"))
            casts.append(helper.make_node("Cast", [init.name + "__q"], [init.name + "__qf"], to=onnx.TensorProto.FLOAT))
            casts.append(helper.make_node("Mul", [init.name + "__qf", init.name + "__s"], [init.name]))
            stored["int8"] += q.size + 4 * s.size
        elif arr.size >= min_elements and np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
            stored["float16"] += 2 * arr.size
        else:
            keep.append(init)
            stored["float32"] += 4 * arr.size
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)

    fixed = {v.name for v in g.input} | {v.name for v in g.output} | {""}
    fixed |= {i.name for i in g.initializer if KEEP_NAMED.search(i.name)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in fixed:
            return name
        if name not in names:
            names[name] = np.base_repr(len(names), 36).lower()
        return names[name]

    for init in g.initializer:
        init.name = short(init.name)
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        for a in node.attribute:
            assert a.type != onnx.AttributeProto.GRAPH, "subgraphs are not renamed"
    del g.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    print(f"{path}: weights stored {stored} bytes", flush=True)
    return stored


# ---------------------------------------------------------------- main


def int8_scales(w: np.ndarray) -> np.ndarray:
    """Per-output-channel (axis 0) scales for symmetric int8 storage: max|w| / 127 rounded up to a
    float16 value, so that q * scale (|q| <= 127) is exact in float32 and the channel's largest
    weight maps to +-127; compact_onnx() finds the same scales again from the stored values alone."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float32) / np.float32(127)
    s = m.astype(np.float16)
    low = s.astype(np.float32) < m
    s[low] = np.nextafter(s[low], np.float16(np.inf))
    s[s == 0] = np.float16(1)
    return s.astype(np.float32)


def round_weights(model: torch.nn.Module) -> dict[str, int]:
    """Round a trained model's weights to what the committed ONNX stores: every weight matrix or
    kernel of at least INT8_MIN_ELEMENTS values onto a per-output-channel int8 grid (q * scale, see
    int8_scales), every other parameter (biases, norms) to float16; kept as float32 values."""
    counts = {"int8": 0, "float16": 0}
    with torch.no_grad():
        for p in model.parameters():
            w = p.detach().numpy().astype(np.float32)
            if w.ndim >= 2 and w.size >= INT8_MIN_ELEMENTS:
                s = int8_scales(w).reshape((-1,) + (1,) * (w.ndim - 1))
                q = np.clip(np.rint(w / s), -127, 127).astype(np.float32)
                p.copy_(torch.from_numpy(q * s))
                counts["int8"] += w.size
            else:
                p.copy_(p.half().float())
                counts["float16"] += w.size
    return counts


def finish(dest: Path, onnx_dest: Path, unrounded: Path | None = None) -> None:
    """Round every weight of the saved diffusers folder as round_weights() says (kept as float32),
    so the committed ONNX folder, which stores them as int8 with a scale or as float16, computes the
    same function as the PyTorch folder that reference sets are made from; then export and compact
    it. `unrounded`: first copy the folder as trained there (to measure what the rounding costs)."""
    if unrounded is not None:
        shutil.rmtree(unrounded, ignore_errors=True)
        shutil.copytree(dest, unrounded)
    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        model = cls.from_pretrained(str(dest / sub))
        print(f"{sub}: {round_weights(model)} values rounded (int8 grid / float16)", flush=True)
        model.save_pretrained(str(dest / sub), safe_serialization=True)
    readme = onnx_dest / "README.md"  # the committed description survives a rebuild
    kept = readme.read_bytes() if readme.exists() else None
    export_folder(dest, onnx_dest)
    if kept is not None:
        readme.write_bytes(kept)
    for part in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
        compact_onnx(onnx_dest / part / "model.onnx")
    shutil.copy(dest / "prompts.json", onnx_dest / "prompts.json")
    generation = {
        "_comment": "guidance the model draws best with (fixtures/models/shapes-sd-onnx/README.md); generate reads it when --guidance is not given",
        "guidance_scale": GUIDANCE_SCALE,
    }
    (onnx_dest / "generation_config.json").write_text(json.dumps(generation, indent=1))


def optimum_export(dest: Path, out: Path) -> None:
    """The project's other exporter: optimum's, as users run it, into <out>/shapes-sd-optimum-onnx
    (not committed; float32, optimum's names). conformance/README.md measures it against the same
    reference set as the committed folder."""
    import subprocess

    target = out / f"{NAME}-optimum-onnx"
    shutil.rmtree(target, ignore_errors=True)
    cli = Path(sys.executable).parent / "optimum-cli"
    subprocess.run(
        [str(cli), "export", "onnx", "--model", str(dest), "--task", "text-to-image", str(target)], check=True
    )
    print(f"wrote {target}", flush=True)


def decoder_stage(out: Path) -> None:
    """Step (6), from the saved folder (as --decoder-only runs it): the decoder fine-tune on the
    same data set (drawn again from SEED), then finish() again."""
    images, _, _ = make_data(N_IMAGES, np.random.default_rng(SEED))
    dest = out / NAME
    record = json.loads((dest / "training.json").read_text())
    t = time.time()
    vae = finetune_decoder(
        AutoencoderKL.from_pretrained(str(dest / "vae")), to_tensor(images), DEC_STEPS, record["log"]
    )
    record["summary"]["wall_s"]["decoder"] = round(time.time() - t, 1)
    vae.save_pretrained(str(dest / "vae"), safe_serialization=True)
    (dest / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    finish(dest, out / f"{NAME}-onnx")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures/models"))
    ap.add_argument(
        "--smoke", action="store_true", help="1/40 of the steps and images: checks the script, not the model"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--unrounded",
        type=Path,
        help="also keep the trained PyTorch folder before its weights are rounded for storage, here (to measure the rounding)",
    )
    ap.add_argument(
        "--decoder-finetune",
        action="store_true",
        help="after the U-Net, fine-tune the VAE decoder on noise-augmented latents (step 6; off by default)",
    )
    ap.add_argument(
        "--decoder-only",
        action="store_true",
        help="only the decoder fine-tune and finish() on an already trained <out>/shapes-sd (the steps after the U-Net)",
    )
    ap.add_argument(
        "--finish-only", action="store_true", help="only the last step (finish()) on an already trained <out>/shapes-sd"
    )
    ap.add_argument(
        "--optimum",
        action="store_true",
        help="also export the finished PyTorch folder with optimum's exporter to <out>/shapes-sd-optimum-onnx",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.finish_only:
        finish(args.out / NAME, args.out / f"{NAME}-onnx", args.unrounded)
        if args.optimum:
            optimum_export(args.out / NAME, args.out)
        return 0
    if args.decoder_only:
        decoder_stage(args.out)
        return 0
    torch.use_deterministic_algorithms(True)
    k = 40 if args.smoke else 1
    wall0 = time.time()
    log: list[dict] = []
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(SEED)

    dest, onnx_dest = args.out / NAME, args.out / f"{NAME}-onnx"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    tok = write_tokenizer(dest / "tokenizer")

    images, captions, held = make_data(N_IMAGES // k, rng)
    x = to_tensor(images)
    ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    uncond_ids = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    t_data = time.time() - wall0
    print(f"data: {len(images)} images, {len(held)} held-out combinations, {t_data:.1f} s", flush=True)

    t = time.time()
    vae = train_vae(x, VAE_STEPS // k, gen, log)
    t_vae = time.time() - t
    with torch.no_grad():
        posts = [vae.encode(x[i : i + 256]).latent_dist for i in range(0, len(x), 256)]
        mean = torch.cat([p.mean for p in posts])
        std = torch.cat([p.std for p in posts])
        rec = torch.cat([vae.decode(mean[i : i + 256]).sample for i in range(0, len(mean), 256)])
    vae_psnr = float(10 * torch.log10(4 / (rec.clamp(-1, 1) - x).pow(2).mean()))
    scaling = float(f"{1 / mean.std().item():.5g}")
    vae.register_to_config(scaling_factor=scaling)
    print(f"vae: {t_vae:.0f} s, reconstruction PSNR {vae_psnr:.2f} dB, scaling_factor {scaling}", flush=True)

    t = time.time()
    unet, text = train_unet(mean * scaling, std * scaling, ids, uncond_ids, UNET_STEPS // k, gen, log, len(tok))
    t_unet = time.time() - t

    scheduler = getattr(diffusers, SD15_SCHEDULER["_class_name"]).from_config(SD15_SCHEDULER)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    sizes = {
        part: sum(p.numel() for p in m.parameters())
        for part, m in (("vae", vae), ("vae_decoder", vae.decoder), ("unet", unet), ("text_encoder", text))
    }
    prompts = {
        "size": SIZE,
        "colours": COLOURS,
        "shapes": list(SHAPES),
        "positions": POSITIONS,
        "shape_size": SHAPE_SIZE,
        "jitter": JITTER,
        "held_out": [
            {"prompt": caption(*c), "colour": c[0], "shape": c[1], "background": c[2], "position": c[3]} for c in held
        ],
    }
    summary = {
        "seed": SEED,
        "smoke": args.smoke,
        "threads": args.threads,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "parameters": sizes,
        "images": len(images),
        "vae_steps": VAE_STEPS // k,
        "unet_steps": UNET_STEPS // k,
        "wall_s": {"data": round(t_data, 1), "vae": round(t_vae, 1), "unet_text": round(t_unet, 1)},
        "vae_psnr_db": round(vae_psnr, 2),
        "scaling_factor": scaling,
    }
    (dest / "prompts.json").write_text(json.dumps(prompts, indent=1) + "\n")
    (dest / "training.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1) + "\n")

    finish(dest, onnx_dest, args.unrounded)
    summary["wall_s"]["total"] = round(time.time() - wall0, 1)
    (dest / "training.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    if args.decoder_finetune:
        decoder_stage(args.out)
    if args.optimum:
        optimum_export(dest, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
