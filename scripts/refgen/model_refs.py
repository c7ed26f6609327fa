"""Per-component references: text encoder states, VAE decode / encode / round trip.

(The U-Net's per-step inputs and outputs are captured from real pipeline runs in pipeline_refs.py,
so they are exactly what diffusers feeds it.) Every output here comes from transformers' /
diffusers' own modules, called the way StableDiffusionPipeline calls them. Unless --no-float64,
a float64 copy of each module runs on the same inputs and each case's meta records the float32
tensors' own error against it (float64.py).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer

from .context import RefContext
from .float64 import F64, as_float64, clip_float64_mask, floors
from .spread import spread_entry, ulp_perturb, variants

PROMPTS = {
    "astronaut": "a photograph of an astronaut riding a horse",
    "empty": "",
    "long": "a highly detailed matte painting of a lighthouse on a cliff at dusk, " * 6,
    "unicode": "café crème brûlée, 東京の夜景 🌃✨",
}


def _tokenize(tok: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def text_encoder_refs(ctx: RefContext) -> None:
    tok = CLIPTokenizer.from_pretrained(str(ctx.model_dir / "tokenizer"))
    enc = CLIPTextModel.from_pretrained(str(ctx.model_dir / "text_encoder")).to(ctx.device).eval()
    enc64 = as_float64(enc).cpu() if ctx.float64 else None
    cases = {name: [p] for name, p in PROMPTS.items()}
    cases["batch2"] = [PROMPTS["astronaut"], PROMPTS["unicode"]]
    for name, prompts in cases.items():
        ids = _tokenize(tok, prompts)
        out = enc(ids.to(ctx.device), output_hidden_states=True)
        # clip_skip = 1, as StableDiffusionPipeline.encode_prompt: the penultimate layer's states
        # passed through the final layer norm.
        penultimate = enc.text_model.final_layer_norm(out.hidden_states[-2])
        meta = {"prompts": prompts, "clip_skip_1": "penultimate_normed"}
        if enc64 is not None:
            with clip_float64_mask():
                out64 = enc64(ids, output_hidden_states=True)
            pen64 = enc64.text_model.final_layer_norm(out64.hidden_states[-2])
            meta["float64_floor"] = floors({
                "last_hidden_state": (out.last_hidden_state, out64.last_hidden_state),
                "penultimate_normed": (penultimate, pen64),
            })
            ref32 = {"last_hidden_state": out.last_hidden_state, "penultimate_normed": penultimate}
            ref64 = {"last_hidden_state": out64.last_hidden_state, "penultimate_normed": pen64}
            spread = {}
            # token ids are integers: no one-ulp variant here
            for vname, (vctx, nudged) in variants(ctx.device).items():
                if nudged:
                    continue
                with vctx():
                    o = enc(ids.to(ctx.device), output_hidden_states=True)
                    spread[vname] = spread_entry({"last_hidden_state": o.last_hidden_state,
                                                  "penultimate_normed": enc.text_model.final_layer_norm(o.hidden_states[-2])},
                                                 ref32, ref64)
            meta["float32_spread"] = spread
        ctx.save(f"text_encoder:{name}", {
            "input_ids": ids.to(torch.int32),
            "last_hidden_state": out.last_hidden_state,
            "penultimate_normed": penultimate,
        }, meta)


def _test_image(h: int, w: int, batch: int, seed: int) -> torch.Tensor:
    """A deterministic image in [-1, 1]: smooth gradients plus a little seeded texture."""
    y = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    x = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    base = torch.cat([x.expand(1, 1, h, w), y.expand(1, 1, h, w), (x * y).expand(1, 1, h, w)], dim=1)
    noise = torch.randn((batch, 3, h, w), generator=torch.Generator().manual_seed(seed))
    return (0.8 * base + 0.15 * noise).clamp(-1, 1)


def _vae_sizes(ctx: RefContext) -> dict[str, tuple[int, int, int, int]]:
    """case name (WxH) -> (batch, height, width, seed)."""
    if ctx.sd15:
        return {"512x512": (1, 512, 512, 1)}
    if not ctx.small:
        return {"64x64": (1, 64, 64, 1), "128x64": (1, 64, 128, 2), "batch2-64x64": (2, 64, 64, 3)}
    # half the model's default size (the VAE needs only multiples of its own factor), square and
    # one VAE factor wider, so that the latent width is odd
    geo = ctx.geometry()
    h = geo.default_size // 2
    w2 = h + geo.vae_factor
    return {f"{h}x{h}": (1, h, h, 1), f"{w2}x{h}": (1, h, w2, 2)}


@torch.no_grad()
def vae_refs(ctx: RefContext) -> None:
    vae = AutoencoderKL.from_pretrained(str(ctx.model_dir / "vae")).to(ctx.device).eval()
    sf = vae.config.scaling_factor
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae64 = as_float64(vae).cpu() if ctx.float64 else None
    for name, (b, h, w, seed) in _vae_sizes(ctx).items():
        # decode: latents as the pipeline holds them (scaled by scaling_factor) -> image in [-1, 1]
        latents = torch.randn((b, vae.config.latent_channels, h // scale, w // scale), generator=torch.Generator().manual_seed(seed))
        image = vae.decode(latents.to(ctx.device) / sf).sample
        meta = {"scaling_factor": sf, "seed": seed, "width": w, "height": h, "batch": b}
        if vae64 is not None:
            image64 = vae64.decode(latents.to(F64) / sf).sample
            meta["float64_floor"] = floors({"image": (image, image64)})
            meta["float32_spread"] = {
                vname: spread_entry({"image": _in(vctx, lambda: vae.decode(
                    (ulp_perturb(latents, 1) if nudged else latents).to(ctx.device) / sf).sample)},
                    {"image": image}, {"image": image64})
                for vname, (vctx, nudged) in variants(ctx.device).items()
            }
        ctx.save(f"vae_decode:{name}", {"latents": latents, "image": image}, meta)
        # encode: image -> latent distribution (mean, std as DiagonalGaussianDistribution gives them)
        img = _test_image(h, w, b, seed + 100)
        dist = vae.encode(img.to(ctx.device)).latent_dist
        meta = {"seed": seed + 100, "width": w, "height": h, "batch": b}
        if vae64 is not None:
            dist64 = vae64.encode(img.to(F64)).latent_dist
            meta["float64_floor"] = floors({"mean": (dist.mean, dist64.mean), "std": (dist.std, dist64.std),
                                            "logvar": (dist.logvar, dist64.logvar)})
            ref32 = {"mean": dist.mean, "std": dist.std, "logvar": dist.logvar}
            ref64 = {"mean": dist64.mean, "std": dist64.std, "logvar": dist64.logvar}

            def encode(nudged: bool) -> dict:
                d = vae.encode((ulp_perturb(img, 2) if nudged else img).to(ctx.device)).latent_dist
                return {"mean": d.mean, "std": d.std, "logvar": d.logvar}

            meta["float32_spread"] = {vname: spread_entry(_in(vctx, lambda: encode(nudged)), ref32, ref64)
                                      for vname, (vctx, nudged) in variants(ctx.device).items()}
        ctx.save(f"vae_encode:{name}", {"image": img, "mean": dist.mean, "std": dist.std, "logvar": dist.logvar}, meta)
        # round trip: image -> mean latents * sf -> decode -> image
        lat = dist.mean * sf
        back = vae.decode(lat / sf).sample
        meta = {"scaling_factor": sf, "width": w, "height": h, "batch": b}
        if vae64 is not None:
            lat64 = dist64.mean * sf
            back64 = vae64.decode(lat64 / sf).sample
            meta["float64_floor"] = floors({"latents": (lat, lat64), "reconstruction": (back, back64)})

            def roundtrip(nudged: bool) -> dict:
                la = vae.encode((ulp_perturb(img, 3) if nudged else img).to(ctx.device)).latent_dist.mean * sf
                return {"latents": la, "reconstruction": vae.decode(la / sf).sample}

            meta["float32_spread"] = {
                vname: spread_entry(_in(vctx, lambda: roundtrip(nudged)), {"latents": lat, "reconstruction": back},
                                    {"latents": lat64, "reconstruction": back64})
                for vname, (vctx, nudged) in variants(ctx.device).items()
            }
        ctx.save(f"vae_roundtrip:{name}", {"image": img, "latents": lat, "reconstruction": back}, meta)


def _in(context, compute):
    """compute() inside a variant's context (spread.variants)."""
    with context():
        return compute()


def generate(ctx: RefContext) -> None:
    if ctx.wants("text_encoder"):
        text_encoder_refs(ctx)
    if ctx.wants("vae"):
        vae_refs(ctx)
