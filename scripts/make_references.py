"""Write PyTorch reference sets for an SD 1.x diffusers model folder.

    python scripts/make_references.py --model fixtures/models/tiny-sd --out fixtures/references/tiny-sd/cpu

    python scripts/make_references.py --model fixtures/models/tiny-sd-legacy-pndm --preset small \
        --out fixtures/references/tiny-sd-legacy-pndm/cpu

Every tensor comes from the original diffusers / transformers / torch code, stage by stage; the
ONNX side is never consulted. One folder per set: a manifest.json with provenance (library
versions, device, dtype, seeds, command line, sha256 of each file and of these scripts), the
model's fingerprint (model_fingerprint: what the ONNX side checks a --model folder against) and
one safetensors (or JSON) file per case. Runs on CUDA when present unless --device says otherwise.
--preset small writes a few cases per model stage at sizes valid for the model's geometry, and
no tokenizer corpus or scheduler traces (those do not depend on the model).

Each model stage also runs in float64 on CPU on the same inputs, and every model-stage case's meta
records the float32 tensors' own error against it (`float64_floor`: relL2, maxAbs, meanAbs per
compared tensor): the floor the conformance runner states a port's drift against. A model too big
for float64 on the machine: --no-float64 (the manifest then says "float64_floor": false).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refgen.context import RefContext, sha256_file  # noqa: E402
from refgen.spread import cpu_description  # noqa: E402

STAGES = ["tokenizer", "text_encoder", "rng", "scheduler", "unet", "vae", "end_to_end"]
# stage name -> module under refgen/ (the vae module writes vae_decode, vae_encode, vae_roundtrip)
MODULES = {
    "tokenizer": "tokenizer_refs",
    "text_encoder": "model_refs",
    "rng": "rng_refs",
    "scheduler": "scheduler_refs",
    "unet": "model_refs",
    "vae": "model_refs",
    "end_to_end": "pipeline_refs",
}

# stages a preset leaves out: the small one the tokenizer and the schedulers (they do not test the
# model); the SD 1.5 one the tokenizer corpus (the bundled set's, with the same vocabulary)
PRESET_SKIPS = {"full": set(), "small": {"tokenizer", "scheduler"}, "sd15-ci": {"tokenizer"}}


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ["diffusers", "transformers", "numpy", "safetensors", "scipy", "onnx", "onnxruntime"]:
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # not installed: recorded as absent
            out[name] = "absent"
    try:
        import ftfy  # noqa: F401

        out["ftfy"] = ftfy.__version__
    except ImportError:
        out["ftfy"] = "absent (CLIPTokenizer falls back to BasicTokenizer clean-up)"
    return out


# The scheduler keys a folder's fingerprint compares (those present in the pipeline's config).
FINGERPRINT_SCHEDULER_KEYS = [
    "_class_name", "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
    "steps_offset", "timestep_spacing", "clip_sample", "set_alpha_to_one", "skip_prk_steps",
]


def model_fingerprint(folder: Path, inpaint: bool) -> dict:
    """What a reference set assumes of the model it was made from, read the way diffusers reads it.

    The ONNX side computes the same fields from its folder and refuses a set whose fingerprint
    differs. The scheduler entry is the config AFTER the pipeline's constructor corrected it
    (StableDiffusionPipeline forces steps_offset 1 and clip_sample False; the inpainting pipeline
    forces steps_offset 1 and skip_prk_steps True): the pipeline object is built from the folder's
    components and its scheduler config is read back, so these are diffusers' own corrections.
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from diffusers.utils import logging as dlogging

    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # the deprecation warnings of a legacy scheduler config
    try:
        pipe = cls.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    finally:
        dlogging.set_verbosity(verbosity)
    text, vae, unet = pipe.text_encoder.config, pipe.vae.config, pipe.unet.config
    sched = dict(pipe.scheduler.config)
    sched["_class_name"] = type(pipe.scheduler).__name__
    return {
        "text_hidden_size": text.hidden_size,
        "text_vocab_size": text.vocab_size,
        "text_max_position_embeddings": text.max_position_embeddings,
        "latent_channels": vae.latent_channels,
        "vae_scaling_factor": vae.get("scaling_factor", 0.18215),
        "vae_scale_factor": 2 ** (len(vae.block_out_channels) - 1),
        "unet_in_channels": unet.in_channels,
        "unet_out_channels": unet.out_channels,
        "cross_attention_dim": unet.cross_attention_dim,
        "prediction_type": sched.get("prediction_type", "epsilon"),
        "scheduler": {k: sched[k] for k in FINGERPRINT_SCHEDULER_KEYS if k in sched},
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="diffusers (PyTorch) SD 1.x model folder")
    ap.add_argument("--inpaint-model", type=Path, default=None, help="optional 9-channel inpainting model folder")
    ap.add_argument("--out", type=Path, required=True, help="reference set folder to write (must not exist unless --force)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=None, help=f"comma list of stages out of {','.join(STAGES)}")
    ap.add_argument("--force", action="store_true", help="replace an existing reference set")
    ap.add_argument("--preset", choices=["full", "small", "sd15-ci"], default="full",
                    help="full: every case (the bundled tiny model); small: a few cases per stage "
                         "at sizes the model's geometry allows, without the tokenizer corpus and the scheduler "
                         "traces (which do not depend on the model), for the further fixture geometries; "
                         "sd15-ci: a real-size SD 1.5 set that fits a CI budget (text encoder with clip skip, "
                         "rng, every scheduler trace, one 20-step 512x512 txt2img with its U-Net calls 0 / middle / "
                         "last kept teacher-forced, one img2img, the VAE at 512x512; run it with --no-float64 "
                         "unless the machine holds a float64 SD 1.5 U-Net)")
    ap.add_argument("--no-float64", action="store_true",
                    help="do not run the model stages in float64 (no float64 floor in the set; the runner then says so)")
    args = ap.parse_args(argv)

    for flag, folder in (("--model", args.model), ("--inpaint-model", args.inpaint_model)):
        if folder is not None and not (folder / "model_index.json").is_file():
            # the bundled PyTorch folders are not committed (make_tiny_model.py rebuilds them)
            ap.error(f"{flag} {folder}: not a diffusers model folder (no model_index.json); "
                     "for the bundled tiny models run scripts/make_fixtures.sh first")
    only = args.only.split(",") if args.only else None
    if only:
        bad = [s for s in only if s not in STAGES]
        if bad:
            ap.error(f"--only: unknown stage(s) {bad}; known: {STAGES}")
    if args.out.exists():
        if not args.force:
            ap.error(f"--out {args.out} exists; pass --force to replace it")
    # Build into a sibling temporary folder, then swap it in: never a half-written set.
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(args.device)
    ctx = RefContext(out_dir=tmp, model_dir=args.model, device=device, dtype=torch.float32, only=only, preset=args.preset,
                     float64=not args.no_float64)
    ctx.inpaint_model_dir = args.inpaint_model  # type: ignore[attr-defined]

    done: set[str] = set()
    for stage in STAGES:
        if only and stage not in only:
            continue
        if stage in PRESET_SKIPS[args.preset]:
            continue
        mod_name = MODULES[stage]
        mod = importlib.import_module(f"refgen.{mod_name}")
        if mod_name in done:
            continue  # model_refs covers several stages in one pass
        done.add(mod_name)
        print(f"[make_references] {stage} ({mod_name})", flush=True)
        mod.generate(ctx)

    here = Path(__file__).resolve().parent
    # refgen/schedulers.json (the TypeScript registry) decides which scheduler traces are written
    scripts = sorted([here / "make_references.py", *here.glob("refgen/*.py"), *here.glob("refgen/*.json")])
    manifest = {
        "format": "sd-harness-references/1",
        "model": args.model.name,
        "model_dir": str(args.model),
        "device": args.device,
        "device_name": device_name(device),
        # the CPU, its kernel-relevant ISA features, OS and thread count: floors move with them
        "machine": cpu_description(),
        "dtype": "float32",
        "preset": args.preset,
        "float64_floor": not args.no_float64,
        # each model-stage case's meta also holds float32_spread (the floor as a spread of correct
        # float32 computations) and, for the loops, amplification (refgen/spread.py)
        "float32_spread": not args.no_float64,
        "fingerprint": model_fingerprint(args.model, inpaint=False),
        **({"inpaint_fingerprint": model_fingerprint(args.inpaint_model, inpaint=True)} if args.inpaint_model else {}),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "versions": library_versions(),
        "deterministic_algorithms": True,
        "scripts": {p.relative_to(here.parent).as_posix(): sha256_file(p) for p in scripts},
        "cases": sorted(ctx.cases, key=lambda c: c["id"]),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(f"[make_references] wrote {len(ctx.cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
