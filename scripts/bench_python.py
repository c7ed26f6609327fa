"""The Python side of the benchmark: diffusers' own pipelines, timed the same way as ours.

    .venv/bin/python scripts/bench_python.py --backend torch --model DIR/pytorch [options]
    .venv/bin/python scripts/bench_python.py --backend ort   --model DIR/onnx    [options]

torch: diffusers.StableDiffusionPipeline, float32 on the CPU, torch.set_num_threads(THREADS),
       torch.set_num_interop_threads(1), its default attention processor (SDPA).
ort:   diffusers.OnnxStableDiffusionPipeline (the library's ONNX pipeline) on the same ONNX
       files, CPUExecutionProvider, SessionOptions intra_op_num_threads THREADS, inter_op 1,
       sequential, everything else ORT's default (graph optimisation ALL, memory pattern and
       CPU arena on) -- the same settings the TS pipeline's sessions get.

The workload, identical to bench/ours (src/bench/ours.ts): the text encoder on a batch of 2
(the prompt and the empty negative prompt); one U-Net call with classifier-free guidance
(batch 2, 64x64 latents, 77x768 states, timestep 981); the VAE decoder on [1,4,64,64]; the VAE
encoder on [1,3,512,512]; then txt2img at 512x512 with the scheduler in the folder (PNDM, as SD
1.5), guidance 7.5, STEPS steps, timed end to end with a timestamp per U-Net call. Each stage's
first call is reported apart ("cold") and the statistics are over the calls after it.

Writes one JSON object to --out (or stdout; progress on stderr). Peak RSS: getrusage's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import common.telemetry_off  # noqa: F401  (before onnxruntime)
from common.provenance import library_versions

PROMPT = "a photograph of an astronaut riding a horse"


def log(msg: str) -> None:
    print(f"[py-{ARGS.backend}] {msg}", file=sys.stderr, flush=True)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def proc_stat():
    """All CPUs' (busy, total) jiffies from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        total = sum(v)
        return total - v[3] - (v[4] if len(v) > 4 else 0), total
    except OSError:
        return None


def others_cores(a, b, wall: float, own_cpu: float):
    """Cores other processes kept busy during an interval: all CPUs' busy time minus ours."""
    if not a or not b or b[1] == a[1] or wall <= 0:
        return None
    busy_core_s = (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1) * wall
    return max(0.0, (busy_core_s - own_cpu) / wall)


QUIET = 0.15


def timed(fn, n: int, name: str) -> dict:
    """n calls (the first is the cold one); then up to --extra more while no call after the first
    ran uncontended (others' cores < QUIET), so a busy machine costs time rather than a wrong figure."""
    walls, cpus, others = [], [], []
    la0 = loadavg()

    def clean():
        return any(o is not None and o < QUIET for o in others[1:])

    i = 0
    while i < n or (n > 1 and i < n + ARGS.extra and not clean()):
        s0 = proc_stat()
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        others.append(others_cores(s0, proc_stat(), walls[-1], cpus[-1]))
        o = others[-1]
        log(
            f"{name} {i + 1}/{n}: {walls[-1]:.3f} s (cpu {cpus[-1] / walls[-1]:.2f} cores, others {'?' if o is None else f'{o:.2f}'})"
        )
        i += 1
    return {"wall_s": walls, "cpu_s": cpus, "others_cores": others, "loadavg_before": la0, "loadavg_after": loadavg()}


def main() -> int:
    import numpy as np
    import torch

    threads = ARGS.threads
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    out: dict = {"backend": ARGS.backend, "threads": threads, "steps": ARGS.steps}
    h = w = ARGS.size
    lh, lw = h // 8, w // 8

    t0 = time.perf_counter()
    if ARGS.backend == "torch":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            ARGS.model,
            torch_dtype=torch.float32,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to("cpu")
        out["attention_processor"] = type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__
    else:
        import onnxruntime as ort
        from diffusers import OnnxStableDiffusionPipeline

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        pipe = OnnxStableDiffusionPipeline.from_pretrained(
            ARGS.model,
            provider="CPUExecutionProvider",
            sess_options=so,
            provider_options={},  # else diffusers passes [] and ORT retries
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
    out["load_s"] = time.perf_counter() - t0
    out["rss_after_load"] = rss()
    log(f"loaded in {out['load_s']:.1f} s, rss {out['rss_after_load'] / 1e9:.2f} GB")

    tok = pipe.tokenizer
    ids = tok(
        [PROMPT, ""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="np"
    ).input_ids
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 4, lh, lw), dtype=np.float32)
    latent1 = rng.standard_normal((1, 4, lh, lw), dtype=np.float32)
    image = np.clip(rng.standard_normal((1, 3, h, w), dtype=np.float32) * 0.5, -1, 1)
    stages: dict = {}

    if ARGS.backend == "torch":
        ids_t = torch.from_numpy(ids.astype(np.int64))
        with torch.no_grad():
            ehs = pipe.text_encoder(ids_t)[0]
            s_t, l_t, i_t = torch.from_numpy(sample), torch.from_numpy(latent1), torch.from_numpy(image)
            t981 = torch.tensor(981.0)

            def text():
                with torch.no_grad():
                    pipe.text_encoder(ids_t)

            def unet():
                with torch.no_grad():
                    pipe.unet(s_t, t981, ehs, return_dict=False)

            def dec():
                with torch.no_grad():
                    pipe.vae.decode(l_t / pipe.vae.config.scaling_factor, return_dict=False)

            def enc():
                with torch.no_grad():
                    pipe.vae.encode(i_t, return_dict=False)
    else:
        ids32 = ids.astype(np.int32)
        ehs = pipe.text_encoder(input_ids=ids32)[0]
        t981 = np.array([981.0], dtype=np.float32)

        def text():
            pipe.text_encoder(input_ids=ids32)

        def unet():
            pipe.unet(sample=sample, timestep=t981, encoder_hidden_states=ehs)

        def dec():
            pipe.vae_decoder(latent_sample=latent1 / 0.18215)

        def enc():
            pipe.vae_encoder(sample=image)

    stages["text_encoder"] = timed(text, ARGS.text_repeats, "text encoder")
    stages["unet_step_cfg"] = timed(unet, ARGS.stage_repeats, "unet")
    stages["vae_decode"] = timed(dec, ARGS.stage_repeats, "vae decode")
    stages["vae_encode"] = timed(enc, ARGS.stage_repeats, "vae encode")
    out["stages"] = stages

    e2e = []
    for r in range(ARGS.repeats):
        stamps: list[float] = []
        s0 = proc_stat()
        c0, t0 = time.process_time(), time.perf_counter()
        la0 = loadavg()
        if ARGS.backend == "torch":
            gen = torch.Generator("cpu").manual_seed(42 + r)

            def cb(p, i, t, kw):
                stamps.append(time.perf_counter())
                return kw

            pipe(
                PROMPT,
                height=h,
                width=w,
                num_inference_steps=ARGS.steps,
                guidance_scale=7.5,
                generator=gen,
                callback_on_step_end=cb,
            )
        else:
            pipe(
                PROMPT,
                height=h,
                width=w,
                num_inference_steps=ARGS.steps,
                guidance_scale=7.5,
                generator=np.random.RandomState(42 + r),
                callback=lambda i, t, lat: stamps.append(time.perf_counter()),
                callback_steps=1,
            )
        t1 = time.perf_counter()
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        cpu = time.process_time() - c0
        run = {
            "wall_s": t1 - t0,
            "cpu_s": cpu,
            "others_cores": others_cores(s0, proc_stat(), t1 - t0, cpu),
            "unet_calls": len(stamps),
            "step_s": steps,
            "first_step_end_s": stamps[0] - t0 if stamps else None,
            "after_last_step_s": t1 - stamps[-1] if stamps else None,
            "loadavg_before": la0,
            "loadavg_after": loadavg(),
            "rss_after": rss(),
        }
        e2e.append(run)
        log(f"txt2img {r + 1}/{ARGS.repeats}: {run['wall_s']:.1f} s, {len(stamps)} U-Net calls")
    out["e2e"] = e2e
    out["peak_rss"] = peak_rss()
    out["versions"] = library_versions(("torch", "diffusers", "transformers", "onnxruntime", "onnx", "numpy"))
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            json.dump(out, f)
    else:
        json.dump(out, sys.stdout)
        print()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["torch", "ort"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="txt2img runs")
    ap.add_argument("--stage-repeats", type=int, default=3, help="calls per stage (the first is the cold one)")
    ap.add_argument("--text-repeats", type=int, default=6)
    ap.add_argument(
        "--extra", type=int, default=2, help="extra calls per stage while none after the first was uncontended"
    )
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ARGS = ap.parse_args()
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(k, str(ARGS.threads))
    sys.exit(main())
