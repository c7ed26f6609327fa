/**
 * The committed fixtures themselves: in every reference set each file matches its manifest hash and
 * declared shapes and the manifest carries its provenance and model fingerprint; the fixtures stay
 * within their budget and link only to committed folders; every ONNX model folder loads in
 * onnxruntime-node and runs with the shapes its configs promise, and the tokenizer table decodes
 * back to its text.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { f32 } from "../src/tensor/tensor";
import { ROOT, REFS, USER_FIXTURES } from "./helpers/fixtures";

const refs = ReferenceSet.open(REFS);
const sets = [REFS, ...USER_FIXTURES.map((f) => f.refs).filter((d) => d !== REFS)];
const FINGERPRINT_KEYS = [
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
  "scheduler",
];

describe.each(sets.map((d) => [path.relative(ROOT, d), d]))("%s", (_name, dir) => {
  const set = ReferenceSet.open(dir);

  test("the manifest records provenance and the model's fingerprint", () => {
    const m = set.manifest;
    expect(m.format).toBe("sd-harness-references/1");
    expect(m.device).toBe("cpu");
    for (const lib of ["torch", "diffusers", "transformers", "numpy", "safetensors"]) expect(m.versions[lib]).toMatch(/^\d/);
    const scripts = (m as unknown as { scripts: Record<string, string> }).scripts;
    expect(Object.keys(scripts)).toContain("scripts/make_references.py");
    // the recorded script hashes are those of the committed scripts
    for (const [rel, sha] of Object.entries(scripts)) {
      const actual = crypto
        .createHash("sha256")
        .update(fs.readFileSync(path.join(ROOT, rel)))
        .digest("hex");
      expect(`${rel} ${actual}`).toBe(`${rel} ${sha}`);
    }
    expect(Object.keys(set.fingerprint as object)).toEqual(FINGERPRINT_KEYS);
  });

  test("every case file matches its sha256 and declared tensor shapes", () => {
    expect(set.cases.length).toBeGreaterThan(dir === REFS ? 300 : 20);
    for (const c of set.cases) {
      if (c.file.endsWith(".safetensors")) {
        const t = set.tensors(c.id); // verifies the hash
        for (const name of Object.keys(c.tensors ?? {})) t.raw(name); // verifies the declared shape
      } else {
        set.readVerified(c.id);
      }
    }
  });
});

describe("the committed fixture files", () => {
  let tracked: string[] = [];
  try {
    tracked = execFileSync("git", ["ls-files", "-z", "fixtures"], { cwd: ROOT, encoding: "utf8" }).split("\0").filter(Boolean);
  } catch {
    tracked = []; // not a git checkout (an unpacked package): nothing to check
  }
  const gitTest = tracked.length > 0 ? test : test.skip;

  gitTest("total under 40 MB", () => {
    const total = tracked.reduce((sum, rel) => sum + fs.lstatSync(path.join(ROOT, rel)).size, 0);
    expect(total).toBeLessThan(40e6);
  });

  gitTest("symlinks point inside committed folders, and the shipped model folder has none", () => {
    const isTracked = (rel: string) => tracked.some((t) => t === rel || t.startsWith(`${rel}/`));
    for (const rel of tracked) {
      if (!fs.lstatSync(path.join(ROOT, rel)).isSymbolicLink()) continue;
      expect(rel.startsWith("fixtures/models/tiny-sd-onnx/")).toBe(false);
      const target = path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, rel)), fs.readlinkSync(path.join(ROOT, rel))));
      expect(`${rel} -> ${target}: ${isTracked(target) ? "tracked" : "NOT TRACKED"}`).toBe(`${rel} -> ${target}: tracked`);
    }
  });
});

test("the tokenizer table decodes back to its prompts", () => {
  const vocab: Record<string, number> = JSON.parse(
    fs.readFileSync(path.join(ROOT, "fixtures/models/tiny-sd-onnx/tokenizer/vocab.json"), "utf8"),
  );
  const byId = new Map(Object.entries(vocab).map(([k, v]) => [v, k]));
  // GPT-2 / CLIP byte-to-unicode table, inverted, to turn BPE tokens back into bytes
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const toByte = new Map(cs.map((c, i) => [String.fromCodePoint(c), bs[i]]));
  const corpus = refs.json<{ cases: { text: string; ids: number[] }[] }>("tokenizer:corpus");
  let checked = 0;
  for (const item of corpus.cases) {
    const ids = item.ids.filter((i) => i !== 49406 && i !== 49407);
    if (ids.length === 0 || ids.length >= 75) continue;
    const text = ids
      .map((i) => byId.get(i)!)
      .join("")
      .replace(/<\/w>/g, " ");
    const bytes = Buffer.from([...text].map((ch) => (ch === " " ? 32 : (toByte.get(ch) ?? 63))));
    const decoded = bytes.toString("utf8").trim().replace(/\s+/g, " ");
    // CLIP lower-cases and normalises whitespace; compare letters and digits only
    const norm = (s: string) =>
      s
        .toLowerCase()
        .normalize("NFC")
        .replace(/[^\p{L}\p{N}]/gu, "");
    if (norm(decoded) === norm(item.text)) checked++;
  }
  expect(checked).toBeGreaterThan(100);
});

const folders = ["tiny-sd-onnx", "tiny-sd-inpaint-onnx", "tiny-sd-fp16-onnx", "tiny-sd-int8-onnx", ...USER_FIXTURES.map((f) => f.name)];

test.each(folders)("%s loads and runs with the shapes its configs promise", async (name) => {
  const pipe = await StableDiffusionPipeline.load(path.join(ROOT, "fixtures", "models", name), { threads: 1 });
  try {
    const { unetConfig: u, vaeConfig: v, textConfig: t } = pipe.folder;
    const ids = pipe.tokenize(["a test"]);
    const emb = await pipe.encodeIds([...ids, ...ids]);
    expect(emb.dims).toEqual([2, t.maxPositionEmbeddings, t.hiddenSize]);
    const s = u.sampleSize;
    const sample = f32(new Float32Array(2 * u.inChannels * s * s).fill(0.1), [2, u.inChannels, s, s]);
    const eps = await pipe.runUnet(sample, 500, emb);
    expect(eps.dims).toEqual([2, u.outChannels, s, s]);
    const img = await pipe.decodeLatents(f32(new Float32Array(v.latentChannels * s * s).fill(0.1), [1, v.latentChannels, s, s]));
    expect(img.dims).toEqual([1, 3, s * v.scaleFactor, s * v.scaleFactor]);
    const { mean, std } = await pipe.encodeImage(img);
    expect(mean.dims).toEqual([1, v.latentChannels, s, s]);
    expect(std.dims).toEqual(mean.dims);
    for (const x of [emb, eps, img, mean, std]) expect(x.data.every(Number.isFinite)).toBe(true);
  } finally {
    await pipe.release();
  }
});

// The module reference sets (--localize) pin scripts/make_module_references.py by sha256 as the
// full sets pin make_references.py and refgen/: an edit to it means regenerating them.
const moduleManifests = fs
  .readdirSync(path.join(ROOT, "fixtures", "references"))
  .map((m) => path.join(ROOT, "fixtures", "references", m, "modules", "manifest.json"))
  .filter((f) => fs.existsSync(f));

(moduleManifests.length > 0 ? test : test.skip)("each module reference set records the committed script's sha256", () => {
  for (const f of moduleManifests) {
    const { script } = JSON.parse(fs.readFileSync(f, "utf8")) as { script: { file: string; sha256: string } };
    const actual = crypto
      .createHash("sha256")
      .update(fs.readFileSync(path.join(ROOT, script.file)))
      .digest("hex");
    expect(`${path.relative(ROOT, f)}: ${script.file} ${actual}`).toBe(`${path.relative(ROOT, f)}: ${script.file} ${script.sha256}`);
  }
});
