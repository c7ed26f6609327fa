/**
 * A reference set belongs to one model. Its manifest records that model's fingerprint (shapes,
 * constants and the scheduler config diffusers ran with: scripts/make_references.py); before any
 * case runs, the fingerprint of each --model folder is compared with it, so that a forgotten
 * --references is one clear line instead of dozens of shape errors that look like a broken export.
 */
import { HarnessError, ExitCode } from "../../errors";
import { ModelFolder, ModelFingerprint } from "../../pipeline/model-folder";

const FIELDS: readonly (keyof ModelFingerprint)[] = [
  "text_hidden_size",
  "text_vocab_size",
  "text_max_position_embeddings",
  "latent_channels",
  "vae_scaling_factor",
  "vae_scale_factor",
  "unet_in_channels",
  "unet_out_channels",
  "cross_attention_dim",
  "prediction_type",
];

function same(a: unknown, b: unknown): boolean {
  if (typeof a === "number" && typeof b === "number") return a === b || Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b));
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The first field where the two differ, or null; fields either side lacks (null / absent) are not compared. */
function firstDifference(
  reference: Readonly<Record<string, unknown>>,
  model: ModelFingerprint,
): { field: string; reference: unknown; model: unknown } | null {
  for (const f of FIELDS) {
    const r = reference[f];
    const m = model[f];
    if (r === undefined || r === null || m === undefined || m === null) continue;
    if (!same(r, m)) return { field: f, reference: r, model: m };
  }
  const rs = reference.scheduler;
  if (rs && typeof rs === "object" && !Array.isArray(rs)) {
    for (const [k, m] of Object.entries(model.scheduler)) {
      const r = (rs as Record<string, unknown>)[k];
      if (r === undefined || r === null || m === undefined || m === null) continue;
      if (!same(r, m)) return { field: `scheduler.${k}`, reference: r, model: m };
    }
  }
  return null;
}

/**
 * Refuse a model folder whose fingerprint differs from the one the reference set recorded under
 * `key` ("fingerprint", or "inpaint_fingerprint" for the inpainting model). Returns a warning when
 * the set predates fingerprints (nothing can be checked), else null.
 */
export function checkFingerprint(
  manifest: Readonly<Record<string, unknown>>,
  key: "fingerprint" | "inpaint_fingerprint",
  folder: ModelFolder,
  refsDir: string,
  flag: string,
): string | null {
  const fp = manifest[key];
  if (fp === undefined) {
    return `${refsDir}: the reference set records no ${key} (made by an older make_references.py); cannot check that it belongs to ${flag} ${folder.dir}`;
  }
  if (!fp || typeof fp !== "object" || Array.isArray(fp)) {
    throw new HarnessError(`${refsDir}/manifest.json: "${key}" is not an object`, ExitCode.usage);
  }
  const d = firstDifference(fp as Record<string, unknown>, folder.fingerprint);
  if (d) {
    throw new HarnessError(
      `--references ${refsDir} was made from another model than ${flag} ${folder.dir}: ${d.field} is ${JSON.stringify(d.reference)} in the reference set, ${JSON.stringify(d.model)} in the model's configs; pass the reference set made for this model (scripts/make_references.py), or fix the export's configs if the model is the same`,
      ExitCode.usage,
    );
  }
  return null;
}
